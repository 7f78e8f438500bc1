// Every operation the console sends. graphql-codegen reads this file (the /* GraphQL */ marker) and checks
// each operation against the committed schema.graphql, generating its result and variable types.


export const VIEWER = /* GraphQL */ `
  query Viewer {
    viewer { name role }
  }
`;

export const CAMPAIGNS = /* GraphQL */ `
  query Campaigns {
    campaigns(first: 100) {
      totalCount
      edges {
        node {
          id
          name
          subject
          status
          progress { status recipients sent failed skipped inDoubt }
        }
      }
    }
  }
`;

export const CAMPAIGN = /* GraphQL */ `
  query Campaign($id: ID!) {
    campaign(id: $id) {
      id
      name
      subject
      status
      statusReason
      fromEmail
      fromName
      createdAt
      startedAt
      finishedAt
      lists { id name }
      progress { status statusReason recipients sent failed skipped inDoubt ratePerSecond etaSeconds }
      stats { campaignId recipients sent delivered bounced complained opens uniqueOpens clicks uniqueClicks unsubscribed openRate clickRate bounceRate complaintRate }
      timeline(bucket: HOUR) { start delivered opens clicks }
      links { url clicks uniqueClicks }
      deliveries(first: 100) {
        totalCount
        edges { node { id email status skipReason lastError attempts sentAt } }
      }
    }
  }
`;

export const LISTS = /* GraphQL */ `
  query Lists {
    lists(first: 100) {
      edges { node { id name } }
    }
  }
`;

export const CREATE_LIST = /* GraphQL */ `
  mutation CreateList($input: CreateListInput!) {
    createList(input: $input) {
      list { id name }
      userErrors { field message code }
    }
  }
`;

export const START_CAMPAIGN = /* GraphQL */ `
  mutation StartCampaign($input: CampaignIdInput!) {
    startCampaign(input: $input) {
      campaign { id status }
      userErrors { field message code }
      warnings { code message }
    }
  }
`;

export const PAUSE_CAMPAIGN = /* GraphQL */ `
  mutation PauseCampaign($input: CampaignIdInput!) {
    pauseCampaign(input: $input) {
      campaign { id status }
      userErrors { field message code }
      warnings { code message }
    }
  }
`;

export const RESUME_CAMPAIGN = /* GraphQL */ `
  mutation ResumeCampaign($input: CampaignIdInput!) {
    resumeCampaign(input: $input) {
      campaign { id status }
      userErrors { field message code }
      warnings { code message }
    }
  }
`;

export const CANCEL_CAMPAIGN = /* GraphQL */ `
  mutation CancelCampaign($input: CampaignIdInput!) {
    cancelCampaign(input: $input) {
      campaign { id status }
      userErrors { field message code }
      warnings { code message }
    }
  }
`;

export const CAMPAIGN_PROGRESS = /* GraphQL */ `
  subscription CampaignProgressLive($id: ID!) {
    campaignProgress(id: $id) { status statusReason recipients sent failed skipped inDoubt ratePerSecond etaSeconds }
  }
`;

export const CAMPAIGN_STATS = /* GraphQL */ `
  subscription CampaignStatsLive($id: ID!) {
    campaignStats(id: $id) { campaignId recipients sent delivered bounced complained opens uniqueOpens clicks uniqueClicks unsubscribed openRate clickRate bounceRate complaintRate }
  }
`;

export const IMPORT_SUBSCRIBERS = /* GraphQL */ `
  mutation ImportSubscribers($input: ImportSubscribersInput!) {
    importSubscribers(input: $input) {
      import { id status total processed }
      userErrors { field message code }
    }
  }
`;

export const IMPORT = /* GraphQL */ `
  query ImportDetail($id: ID!) {
    import(id: $id) {
      id
      status
      sourceName
      total
      processed
      inserted
      updated
      skipped
      failed
      error
      errors(first: 200) { totalCount edges { node { row message } } }
    }
  }
`;

export const IMPORT_PROGRESS = /* GraphQL */ `
  subscription ImportProgressLive($id: ID!) {
    importProgress(id: $id) { status total processed inserted updated skipped failed error }
  }
`;

