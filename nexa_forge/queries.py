"""The GraphQL documents nexa_forge sends that dagster-graphql's client has no call for (Dagster 1.13's
webserver schema)."""

REPOSITORIES = """
query Repositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } pipelines { name } } }
    ... on PythonError { message }
  }
  workspaceOrError {
    ... on Workspace {
      locationEntries { name locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}
"""

# A job's domains (its partition keys), its ops with their config fields (two levels of nesting: lora.r,
# pretrained.learning_rate), and the assets each op makes
JOB = """
fragment Settings on ConfigType {
  ... on CompositeConfigType {
    fields { name configType { ... on CompositeConfigType { fields { name configType {
      ... on CompositeConfigType { fields { name } } } } } } }
  }
}
query Job($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline {
      partitionKeysOrError { partitionKeys }
      solids {
        name
        definition {
          ... on SolidDefinition {
            configField { configType { ...Settings } }
            assetNodes {
              isPartitioned
              partitionDefinition { dimensionTypes { dynamicPartitionsDefinitionName } }
            }
          }
        }
      }
    }
    ... on Error { message }
  }
}
"""

ADD_DYNAMIC_PARTITION = """
mutation AddDomain($key: String!, $definition: String!, $repository: RepositorySelector!) {
  addDynamicPartition(partitionKey: $key, partitionsDefName: $definition, repositorySelector: $repository) {
    __typename
    ... on Error { message }
  }
}
"""

PARTITION_SETS = """
query PartitionSets($repository: RepositorySelector!, $job: String!) {
  partitionSetsOrError(repositorySelector: $repository, pipelineName: $job) {
    __typename
    ... on PartitionSets { results { name } }
    ... on Error { message }
  }
}
"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PartitionKeysNotFoundError { partitionKeys }
    ... on Error { message }
  }
}
"""

BACKFILL = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      partitionNames
      error { message }
      partitionStatuses { results { partitionName runId runStatus } }
    }
    ... on Error { message }
  }
}
"""

RUN = """
query Run($id: ID!) {
  runOrError(runId: $id) {
    __typename
    ... on Run {
      jobName
      status
      startTime
      endTime
      tags { key value }
      executionPlan { steps { key } }
      stepStats { stepKey status }
    }
    ... on Error { message }
  }
}
"""

LOGS = """
query Logs($id: ID!, $cursor: String) {
  logsForRun(runId: $id, afterCursor: $cursor) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        ... on MessageEvent { message timestamp level stepKey eventType }
        ... on ErrorEvent { error { message } }
      }
    }
    ... on Error { message }
  }
}
"""

# The runs carrying a tag (a sweep's points and results), newest first
RUNS_TAGGED = """
query RunsTagged($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    __typename
    ... on Runs { results { runId jobName status tags { key value } } }
    ... on Error { message }
  }
}
"""

_METADATA = """
fragment Metadata on MetadataEntry {
  __typename
  label
  ... on TextMetadataEntry { text }
  ... on IntMetadataEntry { intRepr }
  ... on FloatMetadataEntry { floatValue floatRepr }
  ... on BoolMetadataEntry { boolValue }
  ... on JsonMetadataEntry { jsonString }
  ... on MarkdownMetadataEntry { mdStr }
  ... on PathMetadataEntry { path }
  ... on UrlMetadataEntry { url }
  ... on TimestampMetadataEntry { timestamp }
  ... on PipelineRunMetadataEntry { runId }
  ... on AssetMetadataEntry { assetKey { path } }
  ... on TableSchemaMetadataEntry { schema { columns { name type } } }
}
fragment Materialization on MaterializationEvent { partition runId timestamp metadataEntries { ...Metadata } }
"""

# The latest materialization of each partition (or of the unpartitioned asset)
LATEST_MATERIALIZATIONS = (
    _METADATA
    + """
query Latest($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      isPartitioned
      latestMaterializationByPartition { ...Materialization }
      assetMaterializations(limit: 1) { ...Materialization }
    }
    ... on Error { message }
  }
}
"""
)

# Every materialization, newest first
MATERIALIZATIONS = (
    _METADATA
    + """
query History($key: AssetKeyInput!, $partitions: [String!], $limit: Int) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions, limit: $limit) { ...Materialization } }
    ... on Error { message }
  }
}
"""
)
