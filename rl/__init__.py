"""meshtune agents: REINFORCE on RLlib's new API stack, and their evaluation.

Importing the package keeps a private local Ray on 127.0.0.1 (:mod:`rl.ray_setup`): Ray reads
its addressing mode when it is imported, so this runs before any module here imports Ray.
"""

from rl.ray_setup import keep_local_ray_on_loopback

keep_local_ray_on_loopback()
