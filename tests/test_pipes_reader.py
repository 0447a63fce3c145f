"""A stage's message written in chunks (a large record is) reaches the asset whole."""

import json
import sys

import dagster as dg

from resources.pipes_reader import WholeLineMessageReader

# The stage side: dagster_pipes' own writer, made to write each message in two chunks with a pause between, as a
# large message written under load arrives
STAGE = """
import json, time
from dagster_pipes import PipesFileMessageWriterChannel, open_dagster_pipes

def write_in_two(self, message):
    text = json.dumps(message) + "\\n"
    with open(self._path, "a", encoding="utf-8") as fh:
        fh.write(text[: len(text) // 2])
        fh.flush()
        time.sleep(0.5)
        fh.write(text[len(text) // 2 :])

PipesFileMessageWriterChannel.write_message = write_in_two
with open_dagster_pipes() as pipes:
    record = {"curve": ["x" * 100] * 300}
    pipes.report_asset_materialization(metadata={"record": {"raw_value": json.dumps(record), "type": "json"}})
"""


def test_a_message_written_in_chunks_is_read_whole(tmp_path):
    stage = tmp_path / "stage.py"
    stage.write_text(STAGE)

    @dg.asset
    def record(context: dg.AssetExecutionContext):
        client = dg.PipesSubprocessClient(message_reader=WholeLineMessageReader())
        return client.run(context=context, command=[sys.executable, str(stage)]).get_materialize_result()

    result = dg.materialize([record])
    assert result.success
    (materialization,) = result.asset_materializations_for_node("record")
    assert json.loads(materialization.metadata["record"].value) == {"curve": ["x" * 100] * 300}
