"""Smoke test of the PyPI `apache-iggy` 0.9.0 client against a Galgo gateway.

Run by tests/python_smoke.rs (which starts `galgo dev`) with the address, username and
password as arguments: login, ping, a stream and a topic, messages sent and polled back,
a consumer group's next with auto-commit, cleanup. Exits non-zero on the first failure.
"""

import asyncio
import os
import sys

from apache_iggy import Consumer, IggyClient, PollingStrategy, SendMessage


async def main(address: str, username: str, password: str) -> None:
    client = IggyClient(address)
    await client.connect()
    await client.ping()
    await client.login_user(username, password)
    await client.create_stream("py-stream")
    await client.create_topic("py-stream", "py-topic", 2)
    topic = await client.get_topic("py-stream", "py-topic")
    assert topic is not None and topic.partitions_count == 2, topic

    sent = [f"py-{i}" for i in range(25)]
    await client.send_messages(
        "py-stream", "py-topic", 0, [SendMessage(text) for text in sent[:10]]
    )
    await client.send_messages(
        "py-stream", "py-topic", 0, [SendMessage(text) for text in sent[10:]]
    )

    polled = await client.poll_messages(
        "py-stream",
        "py-topic",
        consumer=Consumer.Single(1),
        polling_strategy=PollingStrategy.Offset(0),
        count=100,
        auto_commit=False,
        partition_id=0,
    )
    payloads = [message.payload().decode() for message in polled]
    assert payloads == sent, payloads
    assert [message.offset() for message in polled] == list(range(25))

    # Next with auto-commit, five at a time, reads each message once.
    walked = []
    for _ in range(20):
        page = await client.poll_messages(
            "py-stream",
            "py-topic",
            consumer=Consumer.Single(2),
            polling_strategy=PollingStrategy.Next(),
            count=5,
            auto_commit=True,
            partition_id=0,
        )
        if not page:
            break
        walked.extend(message.payload().decode() for message in page)
    assert walked == sent, walked

    last = await client.poll_messages(
        "py-stream",
        "py-topic",
        consumer=Consumer.Single(1),
        polling_strategy=PollingStrategy.Last(),
        count=3,
        auto_commit=False,
        partition_id=0,
    )
    assert [message.payload().decode() for message in last] == sent[-3:]

    await client.delete_stream("py-stream")
    assert await client.get_stream("py-stream") is None
    print("python smoke: 25 messages sent and polled back; next with auto-commit read each once")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
    # The client's tokio threads may still hand a result to asyncio while CPython shuts
    # down; CPython 3.11 then ends such a thread with pthread_exit, which cannot unwind Rust
    # frames, and glibc aborts (SIGABRT) after every call succeeded, whatever the server
    # answered (CPython gh-87135). The client has no close call, so skip the interpreter's
    # shutdown: everything is done and checked by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
