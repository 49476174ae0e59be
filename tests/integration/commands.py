"""Command listeners for tests that check what a client sends the database."""

from __future__ import annotations

from pymongo import monitoring


class OnCommandSent(monitoring.CommandListener):
    """A listener that acts only when a command is sent."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        raise NotImplementedError

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class Sent(OnCommandSent):
    """The names of the commands a client sends, in order."""

    def __init__(self, names: tuple[str, ...] = ()) -> None:
        self.only = names
        self.sent: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.only or event.command_name in self.only:
            self.sent.append(event.command_name)
