"""Video in, video out with PyAV (which ships its own FFmpeg): frames are decoded, transformed and
encoded one at a time, so memory does not depend on the video's length.

Video codecs by output extension (:data:`VIDEO_CODECS`): H.264 (libx264, CRF 18) for mp4/mov/mkv,
VP9 for webm, MPEG-4 part 2 for avi; 4:2:0 chroma when both sides are even, else 4:4:4 (avi: even
sides only). Frame timestamps are kept. The first audio stream is copied packet by packet when the
output container takes its codec (:data:`AUDIO_COPY`), else re-encoded (:data:`AUDIO_CODECS`); other
streams (subtitles, data) and rotation metadata are not carried over.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import torch

from .media import ImageFn, atomic_path, to_uint8

__all__ = ["VIDEO_CODECS", "AUDIO_CODECS", "AUDIO_COPY", "transform_video", "video_info"]

VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}
_VIDEO_OPTIONS = {"libx264": {"crf": "18", "preset": "medium"},
                  "libvpx-vp9": {"crf": "31", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
                  "mpeg4": {"qscale": "3"}}
#: Audio codecs each container takes as they are (mkv: any).
AUDIO_COPY = {".mp4": {"aac", "mp3", "alac", "opus", "ac3", "eac3", "flac"},
              ".mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"},
              ".webm": {"opus", "vorbis"}, ".avi": {"mp3", "ac3", "pcm_s16le", "pcm_u8"}}
#: Codec an audio stream is re-encoded to when the container does not take it as it is.
AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".webm": "libopus", ".avi": "libmp3lame", ".mkv": "aac"}


def _open(path: Path):
    import av

    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read video {path}: {e}") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"cannot read video {path}: it has no video stream")
    return container


def video_info(path: str | os.PathLike) -> dict:
    """``{"frames", "size", "fps", "audio"}`` of a video file, counting frames by decoding them
    (``size``: ``(W, H)``; ``audio``: the first audio stream's codec name or ``None``)."""
    with _open(Path(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        audio = c.streams.audio[0].codec_context.codec.canonical_name if c.streams.audio else None
        return {"frames": frames, "size": (v.codec_context.width, v.codec_context.height),
                "fps": float(v.average_rate or v.guessed_rate or 0), "audio": audio}


def _add_video(out, suffix: str, rate: Fraction, time_base: Fraction | None, width: int, height: int):
    codec = VIDEO_CODECS[suffix]
    odd = width % 2 or height % 2
    if odd and codec == "mpeg4":
        raise ValueError(f"{suffix} (MPEG-4) needs even frame sides, got {width}x{height}; write mp4 or mkv")
    stream = out.add_stream(codec, rate=rate, options=_VIDEO_OPTIONS.get(codec, {}))
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv444p" if odd else "yuv420p"
    if time_base is not None:
        stream.codec_context.time_base = time_base
    return stream


def _add_audio(out, audio, suffix: str):
    """``(stream, copy)`` for the output's audio: a template copy when the container takes the codec."""
    name = audio.codec_context.codec.canonical_name
    if suffix == ".mkv" or name in AUDIO_COPY.get(suffix, set()):
        return out.add_stream_from_template(audio), True
    codec = AUDIO_CODECS[suffix]
    rate = 48000 if codec == "libopus" else audio.codec_context.sample_rate
    stream = out.add_stream(codec, rate=rate)
    stream.layout = audio.codec_context.layout.name if audio.codec_context.layout else "stereo"
    return stream, False


def transform_video(fn: ImageFn, src: str | os.PathLike, dst: str | os.PathLike, progress: bool = True) -> dict:
    """``fn`` (``(3, H, W)`` -> ``(3, H', W')`` float in [0, 1]) on every frame of the video ``src``,
    written to ``dst`` (:data:`VIDEO_CODECS`) with the audio carried over (module docstring). Written to
    a temporary file that replaces ``dst`` at the end; nothing is left on failure. Returns
    ``{"input", "output", "frames", "size_in", "size_out", "fps", "audio"}`` (``audio``: ``"copied"``,
    ``"re-encoded to <codec>"`` or ``None``)."""
    import av
    from tqdm.auto import tqdm

    src, dst = Path(src), Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in VIDEO_CODECS:
        raise ValueError(f"unknown video extension {dst.suffix!r} for {dst}; use one of {tuple(VIDEO_CODECS)}")
    with _open(src) as inp, atomic_path(dst) as tmp:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        out = av.open(str(tmp), "w")
        bar = tqdm(total=vin.frames or None, unit="frame", disable=not progress, desc=src.name)
        try:
            vout, aout, copy_audio, pending = None, None, False, []
            frames, size_out = 0, None
            streams = (vin, ain) if ain is not None else (vin,)
            for packet in inp.demux(*streams):
                if packet.stream is ain:
                    if packet.dts is None and copy_audio:
                        continue  # the demuxer's flush packet
                    if vout is None:
                        pending.append(packet)  # header not written until the video stream exists
                        continue
                    _write_audio(out, aout, copy_audio, packet)
                    continue
                for frame in packet.decode():
                    img = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float().div_(255)
                    res = fn(img)
                    if vout is None:
                        size_out = (res.shape[-1], res.shape[-2])
                        vout = _add_video(out, suffix, rate, None if suffix == ".avi" else vin.time_base, *size_out)
                        if ain is not None:
                            aout, copy_audio = _add_audio(out, ain, suffix)
                        for p in pending:
                            if not (copy_audio and p.dts is None):
                                _write_audio(out, aout, copy_audio, p)
                        pending = []
                    elif (res.shape[-1], res.shape[-2]) != size_out:
                        raise ValueError(f"frame {frames} came out {res.shape[-1]}x{res.shape[-2]}, the first "
                                         f"{size_out[0]}x{size_out[1]}")
                    new = av.VideoFrame.from_ndarray(to_uint8(res), format="rgb24")
                    if frame.pts is not None:
                        new.pts, new.time_base = frame.pts, frame.time_base
                    else:  # no timestamps in the input: constant rate
                        new.pts, new.time_base = frames, 1 / Fraction(rate)
                    out.mux(vout.encode(new))
                    frames += 1
                    bar.update()
            if vout is None:
                raise ValueError(f"cannot read video {src}: no frame could be decoded")
            out.mux(vout.encode(None))
            if aout is not None and not copy_audio:
                out.mux(aout.encode(None))
        except BaseException:
            try:
                out.close()
            except Exception:  # noqa: S110 (the first error is the one to report)
                pass
            raise
        finally:
            bar.close()
        out.close()
        audio = None if ain is None else "copied" if copy_audio else \
            f"re-encoded to {aout.codec_context.codec.canonical_name}"
        return {"input": src, "output": dst, "frames": frames,
                "size_in": (vin.codec_context.width, vin.codec_context.height), "size_out": size_out,
                "fps": float(rate), "audio": audio}


def _write_audio(out, aout, copy: bool, packet) -> None:
    if copy:
        packet.stream = aout
        out.mux(packet)
        return
    for frame in packet.decode():
        frame.pts = None
        out.mux(aout.encode(frame))
