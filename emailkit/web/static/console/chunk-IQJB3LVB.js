var e=`
  query Subscribers($first: Int!, $after: String, $search: String, $status: SubscriberStatus, $listId: ID) {
    subscribers(first: $first, after: $after, search: $search, status: $status, listId: $listId) {
      totalCount
      totalCountPrecision
      pageInfo { hasNextPage endCursor }
      edges { node { id email name status createdAt } }
    }
  }
`,t=`
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
`,s=`
  query AudienceChoices {
    lists(first: 100) { edges { node { id name } } }
    campaigns(first: 100) { edges { node { id name } } }
  }
`,r=`
  query SegmentPreview($filter: SubscriberFilterInput!) {
    segmentPreview(filter: $filter) {
      count
      userErrors { field message code }
      sample { id email name }
    }
  }
`,n=`
  query Segments {
    segments(first: 100) {
      edges { node { id name description subscriberCount } }
    }
  }
`,i=`
  query SegmentDetail($id: ID!) {
    segment(id: $id) { id name description filter }
  }
`,a=`
  mutation CreateSegment($input: CreateSegmentInput!) {
    createSegment(input: $input) {
      segment { id name subscriberCount }
      userErrors { field message code }
    }
  }
`,d=`
  mutation UpdateSegment($input: UpdateSegmentInput!) {
    updateSegment(input: $input) {
      segment { id name subscriberCount }
      userErrors { field message code }
    }
  }
`,o=`
  mutation DeleteSegment($input: DeleteSegmentInput!) {
    deleteSegment(input: $input) {
      deletedId
      userErrors { field message code }
    }
  }
`,u=`
  query Senders {
    defaultSender { id name type hasCredentials ratePerSecond isDefault }
    senders(first: 100) {
      edges { node { id name type hasCredentials ratePerSecond isDefault } }
    }
  }
`,c=`
  query SenderDetail($id: ID!) {
    sender(id: $id) {
      id name type settings ratePerSecond poolSize hasCredentials credentialsLast4 isDefault createdAt updatedAt
      warmup { startPerDay growthPercent ceilingPerDay startsOn }
      warmupToday { allowance sent remaining resetsAt }
    }
  }
`,m=`
  mutation TestSender($input: TestSenderInput!) {
    testSender(input: $input) {
      ok
      message
      sender { id credentialsLast4 hasCredentials }
      userErrors { field message code }
    }
  }
`;export{e as a,t as b,s as c,r as d,n as e,i as f,a as g,d as h,o as i,u as j,c as k,m as l};
