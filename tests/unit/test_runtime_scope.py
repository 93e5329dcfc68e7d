"""A command's runtime (``runtime.use``) belongs to the code inside its block: other threads of the process (an
in-process worker's pool and flusher beside a command run in the same process) keep the process's runtime, and
the block's end restores nothing they could have seen."""

from __future__ import annotations

import threading

from app.core.settings import Settings
from app.stores import runtime
from app.stores.runtime import Runtime


def _settings(redis_db: int) -> Settings:
    return Settings(REDIS_URL=f"redis://127.0.0.1:1/{redis_db}", CLICKHOUSE_URL="http://127.0.0.1:1/unused")


def test_a_use_block_is_seen_by_its_own_code_alone() -> None:
    process_rt = Runtime(_settings(1))
    runtime.install(process_rt)
    try:
        command_rt = Runtime(_settings(2))
        inside = threading.Event()
        release = threading.Event()
        seen: dict[str, Runtime] = {}

        def command() -> None:
            with runtime.use(command_rt):
                seen["command"] = runtime.get()
                inside.set()
                release.wait(10)

        # Given a command running in one thread with its own runtime
        thread = threading.Thread(target=command)
        thread.start()
        assert inside.wait(10)
        # When another thread (a worker's task) asks for the runtime meanwhile
        seen["worker"] = runtime.get()
        release.set()
        thread.join(10)
        # Then the command saw its own and the other thread the process's, which is still the process's after
        assert seen["command"] is command_rt
        assert seen["worker"] is process_rt
        assert runtime.get() is process_rt
    finally:
        runtime.install(None)
