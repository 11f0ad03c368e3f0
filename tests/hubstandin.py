"""A local stand-in for the Hugging Face hub: just the endpoints huggingface_hub calls to pull.

- ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=true``): the model info with file
  metadata, as ``HfApi.model_info(files_metadata=True)`` reads it: ``sha`` (the commit) and
  ``siblings`` with ``rfilename``, ``size``, ``blobId`` (the git blob sha1) and, for LFS
  files (``*.safetensors``, ``*.bin``), ``lfs`` with ``sha256``, ``size``, ``pointerSize``;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: the file, with ``ETag`` (the sha256 of an
  LFS file, else the git blob id), ``X-Repo-Commit``, ``Content-Length``, ``Accept-Ranges``
  and, for LFS files, ``X-Linked-Etag``/``X-Linked-Size``; ``Range: bytes=N-`` answers 206
  with ``Content-Range``.

Faults a test may set: ``drop_after[path] = n`` (the next GET of ``path`` sends ``n`` bytes,
then the connection is cut), ``corrupt`` (paths served with one byte changed while the
metadata keeps the true hash), ``throttle_s`` (a pause between 64 KiB blocks, so a test can
kill a download half-way), ``down`` (every request answers 503). ``log`` records
``(method, path, Range header)`` of each request.

`running_hub(repos)` runs it on a free port in a thread of its own (the pull under test is
synchronous); point the client at it with ``HF_ENDPOINT``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

__all__ = ["HubRepo", "StandInHub", "running_hub"]

COMMIT = "c0ffee" + "0" * 34
LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class HubRepo:
    files: dict[str, bytes]
    commit: str = COMMIT

    @classmethod
    def of_directory(cls, directory: Path, commit: str = COMMIT) -> HubRepo:
        files = {
            path.relative_to(directory).as_posix(): path.read_bytes()
            for path in sorted(directory.rglob("*"))
            if path.is_file() and not any(p.startswith(".") for p in path.parts[-1:])
        }
        return cls(files, commit)


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


@dataclass
class StandInHub:
    repos: dict[str, HubRepo]
    drop_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    throttle_s: float = 0.0
    down: bool = False
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}", self._info)
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self._info)
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", self._file)
        return app

    def _repo(self, request: web.Request) -> tuple[str, HubRepo]:
        self.log.append((request.method, request.path, request.headers.get("Range")))
        if self.down:
            raise web.HTTPServiceUnavailable()
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        if repo is None:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "RepoNotFound"}, text=f"no repository {repo_id}"
            )
        rev = request.match_info.get("rev")
        if rev not in (None, "main", repo.commit):
            raise web.HTTPNotFound(headers={"X-Error-Code": "RevisionNotFound"}, text=rev or "")
        return repo_id, repo

    async def _info(self, request: web.Request) -> web.Response:
        repo_id, repo = self._repo(request)
        siblings = []
        for path, data in sorted(repo.files.items()):
            entry: dict[str, object] = {"rfilename": path}
            if request.query.get("blobs") in ("True", "true", "1"):
                if _is_lfs(path):
                    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()  # noqa: E501
                    entry |= {
                        "size": len(data),
                        "blobId": _git_sha1(pointer),
                        "lfs": {
                            "sha256": hashlib.sha256(data).hexdigest(),
                            "size": len(data),
                            "pointerSize": len(pointer),
                        },
                    }
                else:
                    entry |= {"size": len(data), "blobId": _git_sha1(data)}
            siblings.append(entry)
        return web.json_response(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": repo.commit,
                "private": False,
                "siblings": siblings,
            }
        )

    async def _file(self, request: web.Request) -> web.StreamResponse:
        _, repo = self._repo(request)
        path = request.match_info["path"]
        data = repo.files.get(path)
        if data is None:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}
            )
        etag = hashlib.sha256(data).hexdigest() if _is_lfs(path) else _git_sha1(data)
        headers = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": repo.commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if _is_lfs(path):
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
        if path in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, status = 0, 200
        wanted = request.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[6:-1])
            if start >= len(data):
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{len(data)}"}
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        cut = self.drop_after.pop(path, None)
        for i in range(0, len(body), 1 << 16):
            block = body[i : i + (1 << 16)]
            if cut is not None and i + len(block) > cut:
                await response.write(block[: max(cut - i, 0)])
                assert request.transport is not None
                request.transport.abort()  # the connection drops half-way
                return response
            await response.write(block)
            if self.throttle_s:
                await asyncio.sleep(self.throttle_s)
        await response.write_eof()
        return response


@contextmanager
def running_hub(repos: dict[str, HubRepo]) -> Iterator[StandInHub]:
    hub = StandInHub(repos)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(hub.app(), handle_signals=False)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        hub.url = f"http://127.0.0.1:{port}"
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    started.wait(10)
    try:
        yield hub
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
