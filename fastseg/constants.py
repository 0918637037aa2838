"""Numbers and names every stage shares, defined once."""

__all__ = ["IGNORE_INDEX", "STRIDE", "IMAGE_EXTS", "MASK_EXTS"]

IGNORE_INDEX = 255  # void pixels: excluded from the loss and every metric (the common mask convention)
STRIDE = 32  # the Unet halves the resolution five times: inputs must be a multiple of 2**5
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # what PIL reads without plugins
MASK_EXTS = (*IMAGE_EXTS, ".gif")  # public sets ship GIF masks (DRIVE's manual/*.gif)
