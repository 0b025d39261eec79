"""meshtune environments: the mesh model, its backends and the Gymnasium env."""
