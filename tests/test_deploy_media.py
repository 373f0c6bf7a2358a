"""`stylize` / `upscale` over image files, folders and videos: outputs, tiles, colour preservation,
and failures that must leave no half-written file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_cases import make_video, tiny_sr, tiny_style, write_checkpoint
from PIL import Image

from perceptlib.cli import main
from perceptlib.deploy import TorchNetwork, rgb_to_ycbcr, ycbcr_to_rgb


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nets")
    return {"style": write_checkpoint(tiny_style(), root / "style"), "sr": write_checkpoint(tiny_sr(), root / "sr")}


def _photo(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.array([1.0, 0.5, 0.2]) + rng.integers(0, 40, (h, w, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(path)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_folder_is_mirrored(ckpts, tmp_path, capsys):
    src = tmp_path / "photos"
    _photo(src / "a.png", 40, 30)
    _photo(src / "b.jpg", 33, 45, seed=1)
    _photo(src / "sub" / "c.png", 50, 20, seed=2)
    (src / "notes.txt").write_text("not an image")
    for cmd, scale in (("stylize", 1), ("upscale", 4)):
        dst = tmp_path / f"out_{cmd}"
        assert main([cmd, "--model", str(ckpts["style" if scale == 1 else "sr"]), str(src), str(dst),
                     "--device", "cpu", "--no-progress"]) == 0
        assert "3 images and 0 videos" in capsys.readouterr().out
        assert _files(dst) == ["a.png", "b.jpg", "sub/c.png"]
        for rel in _files(dst):
            assert Image.open(dst / rel).size == tuple(scale * s for s in Image.open(src / rel).size)
    # the folder's output equals the single file's
    assert main(["stylize", "--model", str(ckpts["style"]), str(src / "sub" / "c.png"), str(tmp_path / "c.png"),
                 "--device", "cpu"]) == 0
    single, mirrored = Image.open(tmp_path / "c.png"), Image.open(tmp_path / "out_stylize" / "sub" / "c.png")
    assert np.array_equal(np.asarray(single), np.asarray(mirrored))


@pytest.mark.parametrize("audio", [True, False])
def test_video_frames_size_and_audio(ckpts, tmp_path, audio, capsys):
    pytest.importorskip("av")
    from perceptlib.deploy import video_info

    src = make_video(tmp_path / "clip.mp4", audio=audio)
    assert video_info(src) == {"frames": 12, "size": (48, 40), "fps": 12.0, "audio": "aac" if audio else None}
    for cmd, out, size in (("stylize", "styled.mp4", (48, 40)), ("upscale", "sr.mkv", (192, 160))):
        assert main([cmd, "--model", str(ckpts["style" if cmd == "stylize" else "sr"]), str(src),
                     str(tmp_path / out), "--device", "cpu", "--no-progress"]) == 0
        text = capsys.readouterr().out
        assert "12 frames at 12 fps" in text and ("audio copied" if audio else "no audio") in text
        info = video_info(tmp_path / out)
        assert info == {"frames": 12, "size": size, "fps": 12.0, "audio": "aac" if audio else None}
    # a container that needs another audio codec: re-encoded
    assert main(["stylize", "--model", str(ckpts["style"]), str(src), str(tmp_path / "styled.webm"),
                 "--device", "cpu", "--no-progress"]) == 0
    assert video_info(tmp_path / "styled.webm")["audio"] == ("opus" if audio else None)
    assert video_info(tmp_path / "styled.webm")["frames"] == 12


def test_video_frames_are_transformed_in_order(tmp_path):
    """Output frame i is fn(input frame i), up to H.264 (CRF 18) loss, and the timestamps are kept."""
    av = pytest.importorskip("av")
    from perceptlib.deploy import transform_video

    src = make_video(tmp_path / "clip.mp4", frames=6, audio=False)
    rec = transform_video(lambda x: 1 - x, src, tmp_path / "out.mp4", progress=False)
    assert rec["frames"] == 6 and rec["audio"] is None

    def frames(path: Path) -> list[tuple[int, torch.Tensor]]:
        with av.open(str(path)) as c:
            return [(f.pts * f.time_base, torch.from_numpy(f.to_ndarray(format="rgb24")).float() / 255)
                    for f in c.decode(video=0)]

    inp, out = frames(src), frames(tmp_path / "out.mp4")
    assert [t for t, _ in inp] == [t for t, _ in out]
    for i, (_, got) in enumerate(out):
        errors = [float((got - (1 - x)).abs().mean()) for _, x in inp]
        assert errors[i] < 0.02 and int(np.argmin(errors)) == i


def test_corrupt_image_clear_error_no_output(ckpts, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "out" / "bad.png"
    assert main(["stylize", "--model", str(ckpts["style"]), str(bad), str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read image" in err and "bad.png" in err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
    # in a folder: the files before it are written, the error names the file, nothing partial is left
    src = tmp_path / "photos"
    _photo(src / "a.png", 30, 30)
    (src / "b.png").write_bytes(bad.read_bytes())
    _photo(src / "c.png", 30, 30)
    dst = tmp_path / "styled"
    assert main(["stylize", "--model", str(ckpts["style"]), str(src), str(dst), "--device", "cpu",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.png failed (1 of 3 files written" in err and "cannot read image" in err
    assert _files(dst) == ["a.png"]
    # an unreadable video
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 50)
    pytest.importorskip("av")
    assert main(["stylize", "--model", str(ckpts["style"]), str(tmp_path / "bad.mp4"), str(tmp_path / "o.mp4")]) == 1
    assert "cannot read video" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_failure_mid_video_leaves_no_file(ckpts, tmp_path, monkeypatch, capsys):
    pytest.importorskip("av")
    src = make_video(tmp_path / "clip.mp4")
    calls = []
    run = TorchNetwork.__call__

    def failing(self, batch):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("injected failure at frame 5")
        return run(self, batch)

    monkeypatch.setattr(TorchNetwork, "__call__", failing)
    out = tmp_path / "out" / "styled.mp4"
    assert main(["stylize", "--model", str(ckpts["style"]), str(src), str(out), "--device", "cpu",
                 "--no-progress"]) == 1
    assert "injected failure at frame 5" in capsys.readouterr().err
    assert len(calls) == 5 and not out.exists() and list(out.parent.iterdir()) == []


def test_tiles_and_preserve_color_cli(ckpts, tmp_path, capsys):
    src = _photo(tmp_path / "in.png", 150, 110)
    assert main(["stylize", "--model", str(ckpts["style"]), str(src), str(tmp_path / "t.png"), "--tile", "64",
                 "--tile-overlap", "16", "--device", "cpu", "--no-progress"]) == 0
    assert "tiles 64 px" in capsys.readouterr().out and Image.open(tmp_path / "t.png").size == (150, 110)
    assert main(["upscale", "--model", str(ckpts["sr"]), str(src), str(tmp_path / "u.png"), "--tile", "64",
                 "--device", "cpu", "--no-progress"]) == 0
    assert Image.open(tmp_path / "u.png").size == (600, 440)
    # colour preservation: the stylised luma with the photo's chroma, within 8-bit rounding
    assert main(["stylize", "--model", str(ckpts["style"]), str(src), str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert main(["stylize", "--model", str(ckpts["style"]), str(src), str(tmp_path / "c.png"), "--preserve-color",
                 "--device", "cpu"]) == 0
    assert "colour preserved" in capsys.readouterr().out

    def ycc(name: str) -> torch.Tensor:
        return rgb_to_ycbcr(torch.from_numpy(np.asarray(Image.open(tmp_path / name), dtype=np.float32) / 255)
                            .permute(2, 0, 1))

    keep, plain, photo = ycc("c.png"), ycc("s.png"), ycc("in.png")
    assert (keep[0] - plain[0]).abs().max() < 2.5 / 255
    # where the stylised luma with the photo's chroma is a colour (elsewhere the chroma is scaled down)
    rgb = ycbcr_to_rgb(torch.cat([plain[:1], photo[1:]]))
    inside = ((rgb > 0.02) & (rgb < 0.98)).all(0)
    assert inside.float().mean() > 0.5
    assert (keep[1:] - photo[1:]).abs()[:, inside].max() < 3 / 255
    # options for the other kind of network are refused
    assert main(["upscale", "--model", str(ckpts["style"]), str(src), str(tmp_path / "x.png")]) == 1
    assert "expected SRNet" in capsys.readouterr().err
    assert main(["stylize", "--model", str(ckpts["style"]), str(src), str(tmp_path / "x.mp4")]) == 1
    assert "must be an image file" in capsys.readouterr().err
