"""The app's cameras by name, and the routes that exist once per camera.

Every per-camera route is registered twice: unprefixed (it means the first camera, so clients
written for one camera keep working) and under `/cameras/<name>/`. Handlers find their camera
with `camera_of(request)`; an unknown name is a 404 that lists the known ones.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from camcast.appkeys import CAMERAS

if TYPE_CHECKING:
    from camcast.camera import Camera

CAMERA_PREFIX = "/cameras/{camera}"
CAMERA_PATH = re.compile(r"^/cameras/[^/]+(?=/)")


class CameraRegistry:
    def __init__(self, cameras: list[Camera]) -> None:
        if not cameras:
            raise ValueError("a server needs at least one camera")
        self._cameras = {camera.name: camera for camera in cameras}
        if len(self._cameras) != len(cameras):
            raise ValueError("camera names must be unique")
        self.first = cameras[0]

    def __iter__(self) -> Iterator[Camera]:
        return iter(self._cameras.values())

    def __len__(self) -> int:
        return len(self._cameras)

    @property
    def names(self) -> list[str]:
        return list(self._cameras)

    def get(self, name: str) -> Camera | None:
        return self._cameras.get(name)

    def lookup(self, name: str) -> Camera:
        """The camera called `name`, or a 404 that names the known ones."""
        camera = self._cameras.get(name)
        if camera is None:
            raise web.HTTPNotFound(text=f"no camera {name[:40]!r}; cameras: {', '.join(self.names)}\n")
        return camera

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Every camera's context; on exit they stop in reverse order, each in its own order."""
        async with contextlib.AsyncExitStack() as stack:
            for camera in self:
                await stack.enter_async_context(camera.running())
            yield


def camera_of(request: web.Request) -> Camera:
    """The camera a request is for: `/cameras/<name>/...`, or the first one for unprefixed paths."""
    cameras = request.app[CAMERAS]
    name = request.match_info.get("camera")
    return cameras.first if name is None else cameras.lookup(name)


def unprefixed(path: str) -> str:
    """`/cameras/<name>/api/status` → `/api/status` (for decisions that depend on the route kind)."""
    return CAMERA_PATH.sub("", path)


def add_camera_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """`path` for the first camera, and the same under `/cameras/<name>` for each one."""
    for full in (path, CAMERA_PREFIX + path):
        if method == "GET":
            app.router.add_get(full, handler)  # answers HEAD too
        else:
            app.router.add_route(method, full, handler)
