"""tierq's shared kernel: settings, the TOML configuration, money and the error tree."""
