"""What the runtime does to the machine: virtual IP, application scripts, checkers."""
