"""Masks from labelling tools: COCO JSON, CVAT "Segmentation mask 1.1" exports and LabelMe JSON.

Each reader returns a ``fastseg.data.layouts.Found`` carrying the export's own class table. CVAT's
colour PNGs are read as they are; COCO and LabelMe shapes are rendered once into a cache outside
the data folder (``common.cache_root``). The data folder is never written.
"""

from .coco import coco_tools, read_coco
from .common import cache_root, detect_annotations
from .cvat import cvat_root, labelmap_text, read_cvat, read_labelmap
from .labelme import read_labelme

__all__ = ["read_coco", "read_cvat", "read_labelme", "detect_annotations", "cache_root", "cvat_root",
           "read_labelmap", "labelmap_text", "coco_tools"]
