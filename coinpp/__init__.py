"""coin: a neural codec that stores data as latent vectors of a meta-learned SIREN (COIN++)."""

from .errors import CoinError

__all__ = ["CoinError"]
__version__ = "0.2.0"
