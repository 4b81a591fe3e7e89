"""What runs are read back as: unit and tensor statistics (`units`), statistics over seeds
(`stats`, `seeds`) and pictures (`plots`)."""
