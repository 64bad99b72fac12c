"""Quality metrics built on the field's libraries (numeric error, FID, COCO mAP)."""
