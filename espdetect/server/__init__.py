"""The espdetect HTTP server: `create_app` for embedding and tests, `StreamingServer` to run it.

Example:
    >>> from espdetect.server import ServerSettings, StreamingServer, create_app
    >>> settings = ServerSettings(cameras=["front=http://192.168.4.1:81/stream"], port=8000)
    >>> server = StreamingServer(create_app(settings), settings)  # server.run() serves until Ctrl-C
"""

from __future__ import annotations

from espdetect.server.app import StreamingServer as StreamingServer
from espdetect.server.app import create_app as create_app
from espdetect.server.camera import Camera as Camera
from espdetect.server.camera import ViewerKind as ViewerKind
from espdetect.server.hub import CameraHub as CameraHub
from espdetect.server.settings import CameraConfig as CameraConfig
from espdetect.server.settings import ServerSettings as ServerSettings
from espdetect.server.settings import load_settings as load_settings

__all__ = [
    "Camera",
    "CameraConfig",
    "CameraHub",
    "ServerSettings",
    "StreamingServer",
    "ViewerKind",
    "create_app",
    "load_settings",
]
