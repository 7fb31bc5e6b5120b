"""Reply streaming: split text into messages, pace posts and edits, drive a Surface."""

from bot.streaming.editing_sink import EditingSink
from bot.streaming.pacer import EditPacer
from bot.streaming.split import Piece, Split, StreamSplitter, split_for_limit, take_piece

__all__ = [
    "EditPacer",
    "EditingSink",
    "Piece",
    "Split",
    "StreamSplitter",
    "split_for_limit",
    "take_piece",
]
