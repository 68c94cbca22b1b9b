"""Experiment (not shipped): fuse the chroma predicted at the render size with the
chroma predicted at render 128, to make the output depend less on the render size
(issue 13). Prints the whole-photo report (autocolor evaluate --whole-photos) of the
shipped default on the test split, with the face prior:

    python docs/eval/render_fusion.py none                     # the shipped default
    python docs/eval/render_fusion.py fuse 128 0.5 1.106       # base render, weight of base, chroma factor

The chroma factor brings the fused result back to the default's colorfulness
(averaging two guesses mutes them), so that the two are compared at equal colorfulness.
Results: docs/eval/render-fusion.md.
"""
import sys, json, time, torch, torch.nn.functional as F
from autocolor.models.chroma_unet import ChromaUNet
from autocolor.pipeline import resize, working_size
from autocolor.evaluate_photos import evaluate_photos, format_photos_markdown
mode = sys.argv[1]
orig = ChromaUNet.predict_ab
BASE = int(sys.argv[2]) if len(sys.argv) > 2 else 128
W = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
K = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
def fused(self, l, guide=None, decoding=None):
    ab = orig(self, l, guide, decoding)
    if guide is not None: return ab
    h, w = l.shape[-2:]
    size = working_size(h, w, BASE, self.stride)
    if tuple(size) == (h, w): return ab
    small = orig(self, resize(l, size), None, decoding)
    small = F.interpolate(small, size=ab.shape[-2:], mode='bilinear', align_corners=False)
    return K * (W * small + (1 - W) * ab)
if mode == 'fuse': ChromaUNet.predict_ab = fused
t = time.time()
r = evaluate_photos(['default'], 'data/photos2', faces=(True,))
print(format_photos_markdown(r)); print('s', time.time() - t)
