"""A hub subscriber that is not a socket: it takes nothing unless a subclass says otherwise."""

from __future__ import annotations

from chat.protocol import Frame


class Listener:
    """The hub's Subscriber protocol with every delivery ignored; subclasses override what they use."""

    def __init__(self, name: str) -> None:
        self.user = "-"  # nobody's: presence pushes and kicks are never for it
        self.session_id = name  # names it in the hub's sets (and its logs)

    def deliver_message(self, channel: int, message_id: int, frame: Frame) -> None: ...
    def deliver_ephemeral(self, channel: int, frame: Frame) -> None: ...
    def deliver_control(self, frame: Frame) -> None: ...
    def deliver_presence(self, user: str, stamp: int, frame: Frame) -> None: ...
    def gap(self, channel: int) -> None: ...

    def kicked(self, channel: int, frame: Frame) -> bool:
        return False
