"""Helpers shared by the camcast tests: a real server subprocess, an MJPEG parser, Chromium, loopback ICE.

Import them as `from support.server import ...` (pytest puts tests/ on sys.path for the conftest).
"""
