"""meshtune agents: REINFORCE on RLlib's new API stack."""
