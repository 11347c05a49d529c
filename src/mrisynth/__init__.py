"""mrisynth: does adding diffusion-generated images help my MRI classifier, and at what real:synthetic ratio?"""

__version__ = "0.1.0"
