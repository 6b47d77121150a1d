"""Age progression in image space: a child's photo aged to the age they would be now.

``age_photo`` finds the face (dlib HOG + 68 landmarks), moves its landmarks with a growth
model fitted on real children's faces (``growth.py``, data in ``data/growth_v2.json``) and
warps the photo to match (``warp.py``). ``contact_sheet`` lays results side by side.
"""

from service.ageing.growth import GrowthModel, Sex, load_growth_model
from service.ageing.landmarks import Box, LandmarkDetector
from service.ageing.progression import (
    MAX_AGE_AT_PHOTO,
    MAX_TARGET_AGE,
    AgedFace,
    AgeProgressor,
    Progression,
    age_photo,
)
from service.ageing.sheet import contact_sheet

__all__ = [
    "MAX_AGE_AT_PHOTO",
    "MAX_TARGET_AGE",
    "AgeProgressor",
    "AgedFace",
    "Box",
    "GrowthModel",
    "LandmarkDetector",
    "Progression",
    "Sex",
    "age_photo",
    "contact_sheet",
    "load_growth_model",
]
