"""Check an SDP offer before any peer is built: is it SDP, does it want video, which codec to send."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpSender, sdp
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from camcast.webrtc.compat import common_video_codecs, h264_profile_codec, offers_codec

CODEC_MIME = {"h264": "video/H264", "vp8": "video/VP8"}
CODEC_NAMES = {"h264": "H.264", "vp8": "VP8"}
RECEIVING_DIRECTIONS = ("recvonly", "sendrecv")


class OfferError(Exception):
    """The offer cannot be answered; `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class OfferPlan:
    codec: str | None  # "h264" or "vp8": which shared packet hub feeds this peer; None: sound only


def parse_offer(text: str) -> sdp.SessionDescription:
    """The offer as parsed SDP, or OfferError (400) when it is not usable SDP."""
    if not text.strip():
        raise OfferError(400, "the offer is empty")
    if not text.lstrip().startswith("v=0"):
        raise OfferError(400, "the offer is not SDP (it must start with v=0)")
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:  # the parser raises whatever a malformed line trips over
        raise OfferError(400, f"the offer is not valid SDP ({type(exc).__name__})") from None
    if not description.media:
        raise OfferError(400, "the offer has no media sections (m= lines)")
    _check_bundle(description)
    return description


def pick_codec(video: sdp.MediaDescription, codec_setting: str) -> str:
    """The codec to send on one video m-line, or OfferError (422) when it cannot receive ours."""
    if video.port == 0:
        raise OfferError(422, "the offer's video m-line is rejected (port 0)")
    direction = video.direction or "sendrecv"  # RFC 3264: no attribute means sendrecv
    if direction not in RECEIVING_DIRECTIONS:
        raise OfferError(422, f"the offer's video m-line is {direction}; it must be recvonly or sendrecv")
    usable = {c.mimeType.lower() for c in common_video_codecs(video.rtp.codecs)}
    offered = sorted({c.name for c in video.rtp.codecs if not is_rtx(c)}) or ["none"]
    wanted = ("h264", "vp8") if codec_setting == "auto" else (codec_setting,)
    for codec in wanted:
        if CODEC_MIME[codec].lower() in usable:
            return codec
    if codec_setting == "auto":
        reason = ("the offer has no codec this server sends: it needs H.264 (constrained baseline, "
                  f"packetization-mode 1) or VP8; offered: {', '.join(offered)}")
    else:
        reason = (f"this server sends {CODEC_NAMES[codec_setting]} only (--codec {codec_setting}) "
                  f"and the offer lacks it; offered: {', '.join(offered)}")
    raise OfferError(422, reason)


def video_sections(description: sdp.SessionDescription) -> list[sdp.MediaDescription]:
    return [m for m in description.media if m.kind == "video"]


def plan_offer(text: str, codec_setting: str) -> OfferPlan:
    """Pick the codec for an offer, or raise OfferError (400: not SDP, 422: nothing we can send).
    An offer with an audio m-line that takes Opus and no video m-line is for the sound alone."""
    videos = video_sections(parse_offer(text))
    if not videos:
        if offers_opus(text):
            return OfferPlan(None)
        raise OfferError(422, "the offer has no video m-line (nor an audio one that receives Opus); add a "
                         "recvonly video transceiver")
    return OfferPlan(pick_codec(videos[0], codec_setting))


def plan_sections(text: str, codec_settings: list[str]) -> list[str | OfferError]:
    """For an offer with one video m-line per camera (the wall): each one's codec, or why not.

    Raises OfferError when the offer as a whole is unusable or has fewer video m-lines than cameras.
    """
    videos = video_sections(parse_offer(text))
    if len(videos) < len(codec_settings):
        raise OfferError(422, f"the offer has {len(videos)} video m-line(s) for {len(codec_settings)} "
                         "camera(s); add one recvonly video transceiver per camera, in order")
    plans: list[str | OfferError] = []
    for video, setting in zip(videos, codec_settings, strict=False):
        try:
            plans.append(pick_codec(video, setting))
        except OfferError as exc:
            plans.append(exc)
    return plans


def _check_bundle(description: sdp.SessionDescription) -> None:
    """A BUNDLE group must start with a media section the offer has.

    aiortc moves every bundled section onto the first one's transport; when that section does not
    exist the others are left without one, and the peer cannot be answered, connected or closed.
    """
    mids = {str(m.rtp.muxId) for m in description.media if m.rtp.muxId is not None}
    for group in description.group:
        if group.semantic == "BUNDLE" and group.items and str(group.items[0]) not in mids:
            raise OfferError(400, f"the offer's BUNDLE group starts with {str(group.items[0])[:40]!r}, "
                             "which is not the mid of any of its media sections")


BASELINE_PROFILES = (0x42,)  # profile_idc of what x264's baseline (every browser's) is


def offers_opus(text: str) -> bool:
    """Whether the offer has an audio m-line that receives Opus (the camera's sound can go there)."""
    for media in parse_offer(text).media:
        direction = media.direction or "sendrecv"
        if media.kind == "audio" and media.port != 0 and direction in RECEIVING_DIRECTIONS \
                and any(c.mimeType.lower() == "audio/opus" for c in media.rtp.codecs):
            return True
    return False


def opus_preferences() -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]


def camera_profile(profile_level_id: str | None) -> str | None:
    """A passed-through camera's profile-level-id when it is not the baseline every peer takes."""
    if not profile_level_id or len(profile_level_id) != 6:
        return None
    return None if int(profile_level_id[:2], 16) in BASELINE_PROFILES else profile_level_id


def offers_h264_profile(text: str, profile_level_id: str) -> bool:
    """Whether the offer's first video m-line takes H.264 (packetization-mode 1) in the profile of
    `profile_level_id`: then a camera's own stream goes out as it is, and the answer says so."""
    videos = video_sections(parse_offer(text))
    return bool(videos) and offers_codec(videos[0].rtp.codecs, h264_profile_codec(profile_level_id))


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """The sender capabilities for one codec (all its H.264 profiles) plus RTX, in that order."""
    mime = CODEC_MIME[codec].lower()
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in capabilities if c.mimeType.lower() == mime] + [c for c in capabilities if is_rtx(c)]
