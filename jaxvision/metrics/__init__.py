"""Host-side evaluation metrics (numpy): COCO mAP for detection and instance segmentation, ROUGE-L
for summarisation."""

from jaxvision.metrics.coco import (
    IOU_THRESHOLDS,
    RECALL_THRESHOLDS,
    COCOEvaluator,
    average_precision,
    box_iou,
    interpolated_precision,
    mask_iou,
    match_detections,
    sort_by_score,
)
from jaxvision.metrics.rouge import RougeL, lcs_length, rouge_l

__all__ = [
    "COCOEvaluator",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "RougeL",
    "average_precision",
    "box_iou",
    "interpolated_precision",
    "lcs_length",
    "mask_iou",
    "match_detections",
    "rouge_l",
    "sort_by_score",
]
