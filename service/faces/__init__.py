"""Faces: image intake, detection, alignment, quality and embedding behind one interface."""
