"""The ``worldvae`` command. This layer alone imports all three packages."""
