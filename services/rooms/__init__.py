"""The rooms service: authoritative room state and membership, applied from room commands."""
