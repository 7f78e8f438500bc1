// The operations of the audience screens (subscribers, segments, a subscriber's page) and of the senders
// screen. graphql-codegen reads every src/operations*.ts file and checks each one against schema.graphql.

export const SUBSCRIBERS = /* GraphQL */ `
  query Subscribers($first: Int!, $after: String, $search: String, $status: SubscriberStatus, $listId: ID) {
    subscribers(first: $first, after: $after, search: $search, status: $status, listId: $listId) {
      totalCount
      totalCountPrecision
      pageInfo { hasNextPage endCursor }
      edges { node { id email name status createdAt } }
    }
  }
`;

export const SUBSCRIBER = /* GraphQL */ `
  query SubscriberDetail($id: ID!) {
    subscriber(id: $id) {
      id
      email
      name
      status
      attributes
      createdAt
      updatedAt
      subscriptions { status createdAt list { id name } }
      events(first: 50) {
        totalCount
        edges { node { id type bounceType provider occurredAt url reason name campaign { id name } } }
      }
      flowRuns(first: 50) {
        totalCount
        edges { node { id status enteredAt finishedAt exitReason dueAt version flow { id name } currentStep { key type } } }
      }
    }
  }
`;

export const AUDIENCE_CHOICES = /* GraphQL */ `
  query AudienceChoices {
    lists(first: 100) { edges { node { id name } } }
    campaigns(first: 100) { edges { node { id name } } }
  }
`;

export const SEGMENT_PREVIEW = /* GraphQL */ `
  query SegmentPreview($filter: SubscriberFilterInput!) {
    segmentPreview(filter: $filter) {
      count
      userErrors { field message code }
      sample { id email name }
    }
  }
`;

export const SEGMENTS = /* GraphQL */ `
  query Segments {
    segments(first: 100) {
      edges { node { id name description subscriberCount } }
    }
  }
`;

export const SEGMENT = /* GraphQL */ `
  query SegmentDetail($id: ID!) {
    segment(id: $id) { id name description filter }
  }
`;

export const CREATE_SEGMENT = /* GraphQL */ `
  mutation CreateSegment($input: CreateSegmentInput!) {
    createSegment(input: $input) {
      segment { id name subscriberCount }
      userErrors { field message code }
    }
  }
`;

export const UPDATE_SEGMENT = /* GraphQL */ `
  mutation UpdateSegment($input: UpdateSegmentInput!) {
    updateSegment(input: $input) {
      segment { id name subscriberCount }
      userErrors { field message code }
    }
  }
`;

export const DELETE_SEGMENT = /* GraphQL */ `
  mutation DeleteSegment($input: DeleteSegmentInput!) {
    deleteSegment(input: $input) {
      deletedId
      userErrors { field message code }
    }
  }
`;

export const SENDERS = /* GraphQL */ `
  query Senders {
    defaultSender { id name type hasCredentials ratePerSecond isDefault }
    senders(first: 100) {
      edges { node { id name type hasCredentials ratePerSecond isDefault } }
    }
  }
`;

export const SENDER = /* GraphQL */ `
  query SenderDetail($id: ID!) {
    sender(id: $id) {
      id name type settings ratePerSecond poolSize hasCredentials credentialsLast4 isDefault createdAt updatedAt
      warmup { startPerDay growthPercent ceilingPerDay startsOn }
      warmupToday { allowance sent remaining resetsAt }
    }
  }
`;

export const TEST_SENDER = /* GraphQL */ `
  mutation TestSender($input: TestSenderInput!) {
    testSender(input: $input) {
      ok
      message
      sender { id credentialsLast4 hasCredentials }
      userErrors { field message code }
    }
  }
`;
