"""Host-side evaluation metrics (numpy): COCO mAP for detection and instance segmentation."""

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

__all__ = [
    "COCOEvaluator",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "average_precision",
    "box_iou",
    "interpolated_precision",
    "mask_iou",
    "match_detections",
    "sort_by_score",
]
