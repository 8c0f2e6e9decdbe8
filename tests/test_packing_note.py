"""The packing line of the plan names the trap of fewer steps per epoch (trainer/chat_data.py)."""
from trainer.chat_data import packing_note


def test_packed_rows_say_how_many_fewer_steps_an_epoch_has():
    note = packing_note("pack", 1005, 2894, 0.008)
    assert note == ("--packing pack: 1,005 rows from 2,894 conversations, 0.8% of the epoch's positions are "
                    "padding; 2.9 conversations a row, so an epoch has 2.9x fewer steps than with --packing "
                    "none: raise --epochs to keep as many updates")


def test_one_conversation_a_row_says_nothing_more():
    assert packing_note("none", 2894, 2894, 0.41) == ("--packing none: 2,894 rows from 2,894 conversations, "
                                                      "41.0% of the epoch's positions are padding")
