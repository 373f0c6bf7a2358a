"""Pack what a GPU machine without our cache or a network needs into ``.device/`` (git-ignored):
the Caffe VGG-16 up to conv4_3 (exported, content sha256 recorded), the training photos with their
shorter side reduced to at most 360 px (WebP, quality 92; the 64 MiB limit on what travels), the two
style paintings and the content photos. Run here, then ``scripts/device/run.sh`` there.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from perceptlib.data import image_paths
from perceptlib.weights import export_vgg16

OUT = Path(".device")
SHORT = 360

if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "train").mkdir(parents=True)
    meta = export_vgg16("caffe", OUT / "vgg16_caffe_conv4_3.pt", upto="conv4_3")
    print("weights", meta["sha256"])
    for p in image_paths("train"):
        im = Image.open(p).convert("RGB")
        s = SHORT / min(im.size)
        if s < 1:
            im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
        im.save(OUT / "train" / (p.stem + ".webp"), quality=92, method=6)
    for sub, names in (("styles", ("starry_night", "great_wave")), ("content", None)):
        (OUT / sub).mkdir()
        for p in image_paths(sub):
            if names is None or p.stem in names:
                shutil.copy(p, OUT / sub / p.name)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"{OUT}: {total / 2**20:.1f} MiB")
