"""Data and model checks with Great Expectations. Knows nothing of Prefect."""
from validation.report import CheckResult, DataValidationError, ValidationReport

__all__ = ["CheckResult", "DataValidationError", "ValidationReport"]
