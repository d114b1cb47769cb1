"""``python -m kommo_sim --port P --token T …``: the simulator as a process."""

import sys

from kommo_sim.cli import main

sys.exit(main(sys.argv[1:]))
