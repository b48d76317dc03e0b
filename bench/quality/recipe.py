"""Self-contained functions of the retrieval recipes measured in explore.py, ready to port into the core.

Global descriptor (stays a 512-d VGG19 vector, one per document, cosine in Elasticsearch):
    preprocess(image, size)        aspect-preserving resize to a max side, Keras "caffe" preprocessing
    ConvNet(weights).conv5_4(x)    VGG19 block5_conv4 feature map (after ReLU, before the last pool)
    mac / gem / rmac(fmap)         pooling -> 512 floats
    Whitening.fit / .apply         PCA-whitening 512 -> 512 (a 512x512 matrix + a mean, stored with the index)

Local verification of the top K candidates:
    extract_local(image, ...)      SIFT/RootSIFT keypoints on the image resized to a max side
    encode_local / decode_local    compact bytes stored per document (x,y float16, descriptors uint8)
    verify(query, candidate)       ratio test + RANSAC homography -> inlier count
    rerank(order, inliers, T)      re-rank the global top K by inliers when the best has >= T inliers
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------- global


def preprocess(image: Image.Image, size: str | int) -> np.ndarray:
    """RGB PIL image -> (h, w, 3) float32 network input.

    size "sqN": squash to NxN (the current product recipe); N (int or digits): keep the aspect ratio, longer
    side N (up- or down-scaled), bilinear with Pillow's antialiasing when shrinking.
    """
    size = str(size)
    rgb = image.convert("RGB")
    if size.startswith("sq"):
        n = int(size[2:])
        resized = rgb.resize((n, n), Image.BILINEAR)
    else:
        n = int(size)
        scale = n / max(rgb.size)
        w, h = max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))
        resized = rgb.resize((w, h), Image.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32)  # (h, w, 3) RGB 0..255
    # Keras' vgg19.preprocess_input ("caffe"): RGB -> BGR, minus the ImageNet channel means; no scaling.
    return pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)


class ConvNet:
    """VGG19 (ImageNet) up to block5_conv4, any input size; one traced graph for every shape."""

    def __init__(self, weights: str):
        import keras
        import tensorflow as tf

        base = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
        model = keras.Model(base.input, base.get_layer("block5_conv4").output)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True)
        def forward(batch):
            return model(batch, training=False)

        self._forward = forward

    def conv5_4(self, x: np.ndarray) -> np.ndarray:
        """(h, w, 3) preprocessed input -> (h/16, w/16, 512) float32 non-negative feature map."""
        return self._forward(x[None]).numpy()[0]


def pool5(fmap: np.ndarray) -> np.ndarray:
    """block5_pool from a block5_conv4 map: 2x2 max pooling, stride 2, 'valid' (as Keras does)."""
    h, w, c = fmap.shape
    h2, w2 = h // 2, w // 2
    return fmap[:2 * h2, :2 * w2].reshape(h2, 2, w2, 2, c).max(axis=(1, 3))


def l2n(v: np.ndarray, axis: int = -1) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=axis, keepdims=True) + 1e-12)


def mac(fmap: np.ndarray) -> np.ndarray:
    """Global max pooling -> (512,)."""
    return fmap.max(axis=(0, 1))


def gem(fmap: np.ndarray, p: float = 3.0) -> np.ndarray:
    """Generalised mean pooling -> (512,)."""
    return np.power(np.power(np.maximum(fmap, 1e-6), p).mean(axis=(0, 1)), 1.0 / p)


def rmac_regions(h: int, w: int, levels: int = 3) -> list[tuple[int, int, int, int]]:
    """R-MAC regions (Tolias et al. 2016, as in cnnimageretrieval-pytorch): the whole map plus, at level
    l = 1..L, square regions of side floor(2*min(h,w)/(l+1)) on a grid with ~40% overlap (one more step along
    the longer side). Returns (y0, x0, y1, x1) in feature-map cells."""
    ovr, steps = 0.4, np.arange(2, 8)
    short = min(h, w)
    b = (max(h, w) - short) / (steps - 1)
    idx = int(np.argmin(np.abs(((short ** 2 - short * b) / short ** 2) - ovr)))
    wd = idx + 1 if w > h else 0
    hd = idx + 1 if h > w else 0
    regions = [(0, 0, h, w)]
    for level in range(1, levels + 1):
        side = int(np.floor(2 * short / (level + 1)))
        if side < 1:
            continue
        half = int(np.floor(side / 2 - 1))
        bw = 0.0 if level + wd == 1 else (w - side) / (level + wd - 1)
        bh = 0.0 if level + hd == 1 else (h - side) / (level + hd - 1)
        xs = (np.floor(half + np.arange(level + wd) * bw) - half).astype(int)
        ys = (np.floor(half + np.arange(level + hd) * bh) - half).astype(int)
        for y in ys:
            for x in xs:
                regions.append((int(y), int(x), int(y) + side, int(x) + side))
    return list(dict.fromkeys(regions))


def region_macs(fmap: np.ndarray, levels: int = 3) -> np.ndarray:
    """(regions, 512) L2-normalised MAC of each R-MAC region."""
    h, w, _ = fmap.shape
    return l2n(np.stack([fmap[y0:y1, x0:x1].max(axis=(0, 1)) for y0, x0, y1, x1 in rmac_regions(h, w, levels)]))


def rmac(fmap: np.ndarray, levels: int = 3, whiten_regions: "Whitening | None" = None) -> np.ndarray:
    """R-MAC: L2'd region MACs (optionally PCA-whitened per region, then L2'd again), summed -> (512,)."""
    regions = region_macs(fmap, levels)
    if whiten_regions is not None:
        regions = l2n(whiten_regions.apply(regions))
    return regions.sum(axis=0)


POOLINGS = {"mac": mac, "gem": gem, "rmac": rmac}


class Whitening:
    """PCA-whitening 512 -> 512, fitted on the indexed images' descriptors: stored as mean (512,) + P (512, 512).

    apply(x) = l2n((l2n(x) - mean) @ P). `shrink` (0..1) softens the whitening of weak directions:
    eigenvalues are raised to -shrink/2 instead of -1/2 (shrink=1 is full whitening); with only ~100 images
    the smallest eigenvalues are noise, so full whitening over-amplifies them.
    """

    def __init__(self, mean: np.ndarray, projection: np.ndarray):
        self.mean = mean.astype(np.float32)
        self.projection = projection.astype(np.float32)

    @classmethod
    def fit(cls, descriptors: np.ndarray, shrink: float = 1.0, eps: float = 1e-6) -> "Whitening":
        x = l2n(np.asarray(descriptors, dtype=np.float64))
        mean = x.mean(axis=0)
        cov = np.cov((x - mean).T)  # (512, 512)
        eigval, eigvec = np.linalg.eigh(cov)
        eigval = np.maximum(eigval, 0) + eps * eigval.max()
        projection = eigvec * np.power(eigval, -0.5 * shrink)[None, :]
        return cls(mean, projection)

    def apply(self, descriptors: np.ndarray) -> np.ndarray:
        return l2n((l2n(np.asarray(descriptors, dtype=np.float32)) - self.mean) @ self.projection)

    def to_bytes(self) -> bytes:
        return self.mean.astype("<f4").tobytes() + self.projection.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, dim: int = 512) -> "Whitening":
        arr = np.frombuffer(blob, dtype="<f4")
        return cls(arr[:dim], arr[dim:].reshape(dim, dim))


# ---------------------------------------------------------------------------------------------- local

_LOCAL_MAGIC = b"LF1"


def extract_local(image: Image.Image, kind: str = "rootsift", max_side: int = 640, nfeatures: int = 500):
    """RGB PIL image -> (xy float32 (n, 2) in the resized image's pixels, descriptors (n, d) uint8, kind).

    The image is shrunk (never enlarged) to max_side before detection. RootSIFT = L1-normalise the SIFT
    vector, sqrt, and scale so it fits uint8 (Hellinger kernel; Arandjelovic & Zisserman 2012).
    """
    import cv2

    gray = np.asarray(image.convert("L"))
    scale = min(1.0, max_side / max(gray.shape))
    if scale < 1.0:
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    if kind in ("sift", "rootsift"):
        detector = cv2.SIFT_create(nfeatures=nfeatures)
    elif kind == "orb":
        detector = cv2.ORB_create(nfeatures=nfeatures)
    elif kind == "akaze":
        detector = cv2.AKAZE_create(threshold=0.0005)
    else:
        raise ValueError(kind)
    keypoints, desc = detector.detectAndCompute(gray, None)
    if desc is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128 if "sift" in kind else 32), np.uint8), kind
    if kind == "akaze" and len(keypoints) > nfeatures:  # AKAZE has no feature cap: keep the strongest
        keep = np.argsort([-k.response for k in keypoints])[:nfeatures]
        keypoints, desc = [keypoints[i] for i in keep], desc[keep]
    xy = np.array([k.pt for k in keypoints], dtype=np.float32)
    if kind == "sift":
        desc = np.clip(np.round(desc), 0, 255).astype(np.uint8)  # cv2's SIFT values are already 0..255
    elif kind == "rootsift":
        d = desc.astype(np.float32)
        d = np.sqrt(d / (d.sum(axis=1, keepdims=True) + 1e-7))  # unit L2 norm now
        desc = np.clip(np.round(d * 512.0), 0, 255).astype(np.uint8)  # components <= ~0.5 in practice
    return xy, desc, kind


def encode_local(local) -> bytes:
    """(xy, desc, kind) -> bytes: magic, kind byte, n (uint16), dim (uint16), xy float16, desc uint8."""
    xy, desc, kind = local
    kinds = ["sift", "rootsift", "orb", "akaze"]
    head = _LOCAL_MAGIC + struct.pack("<BHH", kinds.index(kind), len(xy), desc.shape[1])
    return head + xy.astype("<f2").tobytes() + desc.astype(np.uint8).tobytes()


def decode_local(blob: bytes):
    kinds = ["sift", "rootsift", "orb", "akaze"]
    if blob[:3] != _LOCAL_MAGIC:
        raise ValueError("not a local-feature blob")
    k, n, dim = struct.unpack("<BHH", blob[3:8])
    xy = np.frombuffer(blob, dtype="<f2", count=2 * n, offset=8).reshape(n, 2).astype(np.float32)
    desc = np.frombuffer(blob, dtype=np.uint8, count=n * dim, offset=8 + 4 * n).reshape(n, dim)
    return xy, desc, kinds[k]


def verify(query, candidate, ratio: float = 0.8, reproj: float = 8.0) -> int:
    """Inliers of a RANSAC homography between two local-feature sets after Lowe's ratio test (0 if < 4 matches)."""
    import cv2

    qxy, qd, kind = query
    cxy, cd, _ = candidate
    if len(qd) < 2 or len(cd) < 2:
        return 0
    if kind in ("orb", "akaze"):
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        pairs = matcher.knnMatch(qd, cd, k=2)
    else:
        matcher = cv2.BFMatcher(cv2.NORM_L2)
        pairs = matcher.knnMatch(qd.astype(np.float32), cd.astype(np.float32), k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    if len(good) < 4:
        return 0
    src = qxy[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    dst = cxy[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, reproj, maxIters=2000, confidence=0.995)
    return 0 if mask is None else int(mask.sum())


def rerank(order: np.ndarray, inliers: np.ndarray, min_inliers: int = 15) -> np.ndarray:
    """order: global ranking (reference ids, best first); inliers: count for each of the first K.

    If the best candidate has >= min_inliers, candidates with >= min_inliers go first by inlier count
    (ties keep the global order), then the rest of the global order; else the global order stays.
    """
    k = len(inliers)
    if k == 0 or inliers.max() < min_inliers:
        return order
    head = order[:k]
    verified = [i for i in np.argsort(-inliers, kind="stable") if inliers[i] >= min_inliers]
    rest = [head[i] for i in range(k) if inliers[i] < min_inliers]
    return np.concatenate([head[verified], np.array(rest, dtype=order.dtype), order[k:]])
