"""What runs inside a training process the NVFlare launcher started: boot, observation, train."""
