"""Self-contained functions of the retrieval recipes measured in explore.py, ready to port into the core.

Global descriptor (stays a 512-d VGG19 vector, one per document, cosine in Elasticsearch):
    preprocess(image, size)        aspect-preserving resize to a max side, Keras "caffe" preprocessing
    ConvNet(weights).conv5_4(x)    VGG19 block5_conv4 feature map (after ReLU, before the last pool)
    mac / gem / rmac(fmap)         pooling -> 512 floats
    Whitening.fit / .apply         PCA-whitening 512 -> 512 (a 512x512 matrix + a mean, stored with the index)

Local verification of the top K candidates:
    extract_local(image, ...)      SIFT/RootSIFT keypoints on the image resized to a max side
    encode_local / decode_local    compact bytes stored per document (x,y float16, descriptors uint8)
    verify(query, candidate)       ratio test + RANSAC homography -> inlier count (cv2 BFMatcher)
    verify_batch(query, cands)     the same for all K candidates with one matrix product (~2x cheaper)
    rerank(order, inliers, T)      re-rank the global top K by inliers when the best has >= T inliers

The recommended recipe (see results.md) is the block at the end: REF_SIZES, QUERY_SIZES, document_regions,
raw_vector, WhiteningStats, document_vector, query_vectors, region_max_scores, search.
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

    def __init__(self, weights: str, layer: str = "block5_conv4"):
        import keras
        import tensorflow as tf

        base = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
        model = keras.Model(base.input, base.get_layer(layer).output)

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
    """R-MAC regions (Tolias et al. 2016) as (y0, x0, y1, x1) in feature-map cells: since the port, the
    product's own function (it differs from the first version here only for maps over 3.6 times wider than tall)."""
    from imgsearch.embedder import region_boxes

    return region_boxes(h, w, levels)


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


def verify(query, candidate, ratio: float = 0.8, reproj: float = 8.0, min_matches: int = 4) -> int:
    """Inliers of a RANSAC homography between two local-feature sets after Lowe's ratio test.

    Returns 0 when fewer than max(4, min_matches) matches pass the ratio test (pass the re-ranking threshold
    as min_matches: such a candidate can never reach it, and RANSAC is the expensive part)."""
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
    if len(good) < max(4, min_matches):
        return 0  # cannot reach the re-ranking threshold: skip RANSAC
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


def synthetic_view(image: Image.Image, seed: int, canvas=(448, 336)) -> Image.Image:
    """A photo-like view of an indexed image, for fitting the whitening without any query photos: the image
    perspective-warped to 50-80% of the canvas height, on a random blurred background, slightly blurred and
    re-lit. Deterministic per seed."""
    import cv2

    rng = np.random.default_rng(seed)
    cw, ch = canvas
    src = np.asarray(image.convert("RGB"), dtype=np.float32)
    bg = rng.uniform(40, 220, size=(4, 4, 3)).astype(np.float32)  # smooth random background
    bg = cv2.resize(bg, (cw, ch), interpolation=cv2.INTER_CUBIC)
    bg += rng.normal(0, 12, size=bg.shape).astype(np.float32)
    h0, w0 = src.shape[:2]
    th = rng.uniform(0.5, 0.8) * ch
    tw = th * w0 / h0
    cx, cy = cw / 2 + rng.uniform(-0.15, 0.15) * cw, ch / 2 + rng.uniform(-0.1, 0.1) * ch
    quad = np.array([[cx - tw / 2, cy - th / 2], [cx + tw / 2, cy - th / 2],
                     [cx + tw / 2, cy + th / 2], [cx - tw / 2, cy + th / 2]], dtype=np.float32)
    quad += rng.normal(0, 0.06 * th, size=quad.shape).astype(np.float32)  # perspective / rotation
    rect = np.array([[0, 0], [w0, 0], [w0, h0], [0, h0]], dtype=np.float32)
    hmat = cv2.getPerspectiveTransform(rect, quad)
    warped = cv2.warpPerspective(src, hmat, (cw, ch))
    mask = cv2.warpPerspective(np.ones((h0, w0), np.float32), hmat, (cw, ch))[..., None]
    out = warped * mask + bg * (1 - mask)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.8))
    out = out * rng.uniform(0.7, 1.2) + rng.uniform(-20, 30)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------- the recommended recipe
# Global: the stored vector is a whitened multi-scale R-MAC of the image at two small sizes; the query is many
# region vectors from two larger sizes (the object fills only part of a photo), scored by the best region.
# Local: RootSIFT (500 keypoints, image max side 640) stored per document; the top K=20 are verified.
REF_SIZES = ("sq224", "320")   # document side: squash to 224x224 (the current input) + aspect kept, max side 320
QUERY_SIZES = ("448", "640")   # query side: aspect kept, max side 448 and 640 (~2x the document scale)
QUERY_LEVELS = 5               # R-MAC levels for the query regions (71 regions at 448x336, ~70 at 640x480)
SHRINK = 0.7                   # whitening strength (eigenvalue power -0.35 instead of -0.5)
LOCAL = dict(kind="rootsift", max_side=640, nfeatures=500)
TOP_K = 20                     # global candidates verified
MIN_INLIERS = 15               # re-rank only when the best candidate has at least this many inliers


def document_regions(net: ConvNet, image: Image.Image) -> list[np.ndarray]:
    """Unwhitened, L2'd R-MAC region descriptors of an indexed image, one (regions, 512) array per REF_SIZES
    entry (14 regions at 224x224, ~21 at 320 max side). They feed the whitening statistics and raw_vector()."""
    return [region_macs(net.conv5_4(preprocess(image, size)), levels=3) for size in REF_SIZES]


def raw_vector(regions: list[np.ndarray]) -> np.ndarray:
    """Unwhitened multi-scale R-MAC (512,): per scale the L2'd regions summed and L2'd; scales summed, L2'd.
    Keep it with the document (or recompute it): the stored vector is whiten(raw), so a refit of the whitening
    re-derives every stored vector with one matrix product, without the network."""
    return l2n(np.sum([l2n(r.sum(axis=0)) for r in regions], axis=0)).astype(np.float32)


class WhiteningStats:
    """Running sufficient statistics of region descriptors (n, sum, sum of outer products: ~2 MB), so the
    whitening can be (re)fitted at any time from everything indexed so far, without keeping the regions."""

    def __init__(self, dim: int = 512):
        self.n = 0
        self.total = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def add(self, regions: list[np.ndarray]) -> None:
        for r in regions:
            x = l2n(np.asarray(r, dtype=np.float64))
            self.n += len(x)
            self.total += x.sum(axis=0)
            self.outer += x.T @ x

    def fit(self, shrink: float = SHRINK, eps: float = 1e-6) -> Whitening:
        mean = self.total / self.n
        cov = (self.outer - self.n * np.outer(mean, mean)) / max(1, self.n - 1)
        eigval, eigvec = np.linalg.eigh(cov)
        eigval = np.maximum(eigval, 0) + eps * eigval.max()
        return Whitening(mean, eigvec * np.power(eigval, -0.5 * shrink)[None, :])


def document_vector(raw: np.ndarray, wh: Whitening) -> np.ndarray:
    """The stored 512-d unit vector (Elasticsearch dense_vector 512, cosine): whiten(raw_vector)."""
    return wh.apply(raw[None])[0].astype(np.float32)


def query_vectors(net: ConvNet, image: Image.Image, wh: Whitening) -> np.ndarray:
    """(n, 512) unit vectors, one per query region (all QUERY_SIZES, QUERY_LEVELS): ~140 vectors."""
    return np.concatenate([l2n(wh.apply(region_macs(net.conv5_4(preprocess(image, size)), QUERY_LEVELS)))
                           for size in QUERY_SIZES]).astype(np.float32)


def region_max_scores(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """Score of each document = max over query regions of the cosine. With a kNN index: one kNN search of
    k=TOP_K per query vector (e.g. an Elasticsearch _msearch), merged by the max score per document; the merged
    top K equals the exact top K when each kNN search is exact."""
    return (queries @ documents.T).max(axis=0)


def search(net: ConvNet, image: Image.Image, wh: Whitening, documents: np.ndarray, stored_local: list[bytes]):
    """The whole query path on an in-memory index: global top K by region-max, then local re-ranking."""
    scores = region_max_scores(query_vectors(net, image, wh), documents)
    order = np.argsort(-scores)
    q = extract_local(image, **LOCAL)
    inliers = np.array([verify(q, decode_local(stored_local[j]), min_matches=MIN_INLIERS) for j in order[:TOP_K]])
    return rerank(order, inliers, MIN_INLIERS), scores, inliers


def _unit_float(desc: np.ndarray) -> np.ndarray:
    d = desc.astype(np.float32)
    return d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-7)


def verify_batch(query, candidates: list, ratio: float = 0.8, reproj: float = 8.0,
                 min_matches: int = MIN_INLIERS) -> np.ndarray:
    """Inliers for each candidate, with all the descriptor matching done as ONE matrix product.

    Descriptors are compared by cosine (RootSIFT/SIFT rows L2-normalised: squared distance = 2 - 2 cos), Lowe's
    ratio test per candidate (nearest and second nearest within that candidate), then a RANSAC homography for
    candidates with at least max(4, min_matches) matches. Equivalent to verify() on each, about 3x cheaper.
    """
    import cv2

    qxy, qd, _ = query
    out = np.zeros(len(candidates), dtype=np.int32)
    if len(qd) < 2 or not candidates:
        return out
    q = _unit_float(qd)
    sizes = [len(c[1]) for c in candidates]
    sims = q @ _unit_float(np.concatenate([c[1] for c in candidates])).T  # (nq, sum of candidate sizes)
    rows = np.arange(len(q))
    start = 0
    for idx, (cand, n) in enumerate(zip(candidates, sizes)):
        block = sims[:, start:start + n]
        start += n
        if n < 2:
            continue
        best = block.argmax(axis=1)
        s1 = block[rows, best]
        block[rows, best] = -2.0
        s2 = block.max(axis=1)
        keep = (2 - 2 * s1) < (ratio ** 2) * (2 - 2 * s2)  # squared distances
        if keep.sum() < max(4, min_matches):
            continue
        src = qxy[keep].reshape(-1, 1, 2)
        dst = cand[0][best[keep]].reshape(-1, 1, 2)
        _, mask = cv2.findHomography(src, dst, cv2.RANSAC, reproj, maxIters=2000, confidence=0.995)
        out[idx] = 0 if mask is None else int(mask.sum())
    return out
