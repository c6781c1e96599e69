"""The message path's hand-off to offline notifications (MessageService ``on_stored``)."""

from __future__ import annotations

from chat import commands
from chat.access import Access
from chat.channels import ChannelService
from chat.minter import FixedWorker, IdMinter
from chat.models import Message, Principal
from chat.relay.local import LocalRelay
from chat.service import MessageLimits, MessageService
from chat.store.sqlite import SqliteMessageStore

ALICE = Principal("alice")


async def test_new_messages_and_retries_of_messages_minted_elsewhere_are_offered(sqlite_store: SqliteMessageStore) -> None:
    """A retry answered from the store offers nothing again when this process stored the
    original (it offered it then); when another node — or this one before a restart — did, that
    node may have died before queueing its notifications, so the retry offers it."""
    offered: list[Message] = []
    relay, minter, access = LocalRelay(), IdMinter(FixedWorker(1)), Access(sqlite_store)
    service = MessageService(store=sqlite_store, relay=relay, minter=minter, access=access, limits=MessageLimits(), on_stored=offered.append)
    channel = (
        await ChannelService(store=sqlite_store, relay=relay, minter=minter, access=access, group_max_members=10).create(
            ALICE, commands.CreateChannel("group", "g", ())
        )
    ).channel.id
    ours, created = await service.send(ALICE, commands.Send(None, channel, "mine", "k-ours"))
    assert created
    await service.send(ALICE, commands.Send(None, channel, "mine", "k-ours"))
    foreign_id = ((ours.id >> 22) << 22) | (9 << 12)  # the same millisecond, worker 9
    await sqlite_store.insert_message(Message(foreign_id, channel, "alice", "orphan", 0, "k-orphan"))
    again, created = await service.send(ALICE, commands.Send(None, channel, "orphan", "k-orphan"))
    assert not created and again.id == foreign_id
    assert [m.id for m in offered] == [ours.id, foreign_id]
    await service.close()
