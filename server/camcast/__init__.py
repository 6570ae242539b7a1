"""camcast: capture a camera once, serve it over WebRTC, WHEP and MJPEG, and record it."""

__version__ = "0.1.0"
