"""A toy world small enough to train in on a CPU: procedural scenes, a text-to-image model pretrained on
them, and judges that score generated images (see `world.py`, `pretrain.py`, `judges.py`)."""
