"""Faces: measuring traits on generated faces, words for them, describe, attributes, edits."""
