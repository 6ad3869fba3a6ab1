"""The Great Expectations gate: clean data passes; each kind of damage is named with counts."""
import numpy as np
import pandas as pd
import pytest

from recsys.data.types import RecData
from validation.data import raise_if_failed, validate_data
from validation.report import DataValidationError


def with_interactions(data: RecData, inter: pd.DataFrame) -> RecData:
    return RecData(data.name, data.users, data.items, inter, data.social)


def failed(report):
    return {(c.table, c.column, c.expectation): c for c in report.failures}


def test_clean_synthetic_data_passes(small_network):
    report = validate_data(small_network, require_timestamp=True)
    assert report.success, report.summary()
    assert len(report.checks) > 15


def test_each_kind_of_damage_is_reported(small_network):
    inter = small_network.interactions.copy()
    inter["user_id"] = inter["user_id"].astype(object)
    inter.loc[3, "user_id"] = None
    inter.loc[5, "item_id"] = "j999999"
    inter.loc[7, "timestamp"] = -3
    inter = pd.concat([inter, inter.iloc[10:12]], ignore_index=True)
    report = validate_data(with_interactions(small_network, inter), require_timestamp=True)
    bad = failed(report)
    assert bad[("interactions", "user_id", "expect_column_values_to_not_be_null")].unexpected_count == 1
    unknown = bad[("interactions", "item_id", "expect_column_values_to_be_in_id_table")]
    assert unknown.unexpected_count == 1 and unknown.examples == ["j999999"]
    assert bad[("interactions", "timestamp", "expect_column_values_to_be_between")].examples == [-3]
    dup = bad[("interactions", "user_id,item_id,timestamp,event", "expect_compound_columns_to_be_unique")]
    assert dup.unexpected_count == 4  # both copies of two duplicated rows
    with pytest.raises(DataValidationError) as err:
        raise_if_failed(report)
    assert "j999999" in str(err.value) and "failed 4 of" in str(err.value)
    assert "| NO |" in err.value.report.to_markdown()


def test_wrong_column_and_wrong_types(small_network):
    inter = small_network.interactions.rename(columns={"user_id": "member"})
    bad = failed(validate_data(with_interactions(small_network, inter), require_timestamp=True))
    assert ("interactions", "user_id", "expect_column_to_exist") in bad
    inter = small_network.interactions.copy()
    inter["timestamp"] = inter["timestamp"].astype(str)
    bad = failed(validate_data(with_interactions(small_network, inter), require_timestamp=True))
    assert ("interactions", "timestamp", "expect_column_values_to_be_in_type_list") in bad


def test_float_ids_from_nans_fail_the_type_check(small_network):
    users = pd.DataFrame({"user_id": [1, 2, 3]})
    items = pd.DataFrame({"item_id": [1, 2, 3, 4]})
    inter = pd.DataFrame({"user_id": [1, 1, 1, np.nan], "item_id": [1, 2, 3, 4], "timestamp": [1, 2, 3, 4]})
    bad = failed(validate_data(RecData("t", users, items, inter), require_timestamp=True))
    assert ("interactions", "user_id", "expect_column_values_to_be_in_type_list") in bad
    assert ("interactions", "user_id", "expect_column_values_to_not_be_null") in bad


def test_users_below_the_minimum_and_empty_tables(small_network):
    users = pd.DataFrame({"user_id": ["a", "b"]})
    items = pd.DataFrame({"item_id": ["x", "y", "z"]})
    inter = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "y", "z", "x"], "timestamp": [1, 2, 3, 4]})
    bad = failed(validate_data(RecData("t", users, items, inter)))
    activity = bad[("user_activity", "distinct_items", "expect_column_values_to_be_between")]
    assert activity.unexpected_count == 1 and activity.examples == ["b (1 items)"]
    empty = inter.iloc[:0]
    bad = failed(validate_data(RecData("t", users, items, empty)))
    assert ("interactions", None, "expect_table_row_count_to_be_between") in bad
