"""How describe measures its candidates by default: shared by the CLI, the studio and the
benchmarks without importing torch (the CLI parses arguments before any heavy import)."""

# Faces are measured box-downscaled to this size: every trait of the README's agreement table
# agreed with the truth on 1024x1024 variants downscaled to 128, 256 and 512 as at full size
# (benchmarks/faces_agreement.py --from-size 1024), but at 128 an iris is about 3 pixels, under
# the 5 the README names as the limit. Side by side on three 1024x1024 photo faces (shared 2-core
# EPYC): 0.032 s a face at 128, 0.038 at 256, 0.067 at 512, 0.082 at full size.
DEFAULT_MEASURE_SIZE = 256
DEFAULT_MEASURE_WORKERS = 1
