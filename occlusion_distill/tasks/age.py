"""``age``: age regression in years, trained with a Huber loss; mean absolute error."""

from __future__ import annotations

from .base import RegressionTask

# Errors within this many years are squared, larger ones count linearly; chosen on UTKFace validation
# faces against l1 and the old threshold of one standard deviation (about 20 years): docs/age-loss.md.
AGE_HUBER_YEARS = 5.0


class Age(RegressionTask):
    """Age regression in years; mean absolute error (lower is better)."""

    name = "age"
    label = "age"
    unit = " years"

    def __init__(self, loss: str = "huber", delta: float = AGE_HUBER_YEARS) -> None:
        """``loss``: huber, l1 or mse; ``delta``: the huber threshold in years (see docs/age-loss.md)."""
        super().__init__(loss, delta)
