// The operations of the flow screens (see operations.ts for the marker that graphql-codegen reads).

export const FLOWS = /* GraphQL */ `
  query Flows {
    flows(first: 100) {
      totalCount
      edges { node { id name status version stats { entered active completed exited } } }
    }
  }
`;

export const FLOW = /* GraphQL */ `
  query FlowDetail($id: ID!, $runStatus: FlowRunStatus) {
    flow(id: $id) {
      id
      name
      status
      version
      hasUnpublishedChanges
      createdAt
      updatedAt
      trigger { type eventName attribute list { name } segment { name } }
      stats { entered active completed exited }
      steps { key type next then otherwise waitSeconds template { name } stats { entered completed sent skipped failed opened clicked } }
      runs(first: 20, status: $runStatus) {
        totalCount
        totalCountPrecision
        edges { node { id status enteredAt finishedAt exitReason dueAt subscriber { email } currentStep { key } } }
      }
    }
  }
`;

export const FLOW_STATS = /* GraphQL */ `
  subscription FlowStatsLive($id: ID!) {
    flowStats(id: $id) {
      flowId
      stats { entered active completed exited }
      steps { key stats { entered completed sent skipped failed opened clicked } }
    }
  }
`;

export const PAUSE_FLOW = /* GraphQL */ `
  mutation PauseFlow($input: FlowIdInput!) {
    pauseFlow(input: $input) {
      flow { id status }
      userErrors { field message code }
    }
  }
`;

export const RESUME_FLOW = /* GraphQL */ `
  mutation ResumeFlow($input: FlowIdInput!) {
    resumeFlow(input: $input) {
      flow { id status }
      userErrors { field message code }
    }
  }
`;

export const ARCHIVE_FLOW = /* GraphQL */ `
  mutation ArchiveFlow($input: FlowIdInput!) {
    archiveFlow(input: $input) {
      flow { id status }
      userErrors { field message code }
    }
  }
`;

export const PUBLISH_FLOW = /* GraphQL */ `
  mutation PublishFlow($input: PublishFlowInput!) {
    publishFlow(input: $input) {
      flow { id status }
      userErrors { field message code }
    }
  }
`;
