var e=`
  query Viewer {
    viewer { name role }
  }
`,t=`
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
`;var s=`
  query Lists {
    lists(first: 100) {
      edges { node { id name } }
    }
  }
`,i=`
  mutation CreateList($input: CreateListInput!) {
    createList(input: $input) {
      list { id name }
      userErrors { field message code }
    }
  }
`,a=`
  mutation StartCampaign($input: CampaignIdInput!) {
    startCampaign(input: $input) {
      campaign { id status }
      userErrors { field message code }
      warnings { code message }
    }
  }
`,n=`
  mutation PauseCampaign($input: CampaignIdInput!) {
    pauseCampaign(input: $input) {
      campaign { id status }
      userErrors { field message code }
      warnings { code message }
    }
  }
`,r=`
  mutation ResumeCampaign($input: CampaignIdInput!) {
    resumeCampaign(input: $input) {
      campaign { id status }
      userErrors { field message code }
      warnings { code message }
    }
  }
`,o=`
  mutation CancelCampaign($input: CampaignIdInput!) {
    cancelCampaign(input: $input) {
      campaign { id status }
      userErrors { field message code }
      warnings { code message }
    }
  }
`,p=`
  subscription CampaignProgressLive($id: ID!) {
    campaignProgress(id: $id) { status statusReason recipients sent failed skipped inDoubt ratePerSecond etaSeconds }
  }
`,u=`
  subscription CampaignStatsLive($id: ID!) {
    campaignStats(id: $id) { campaignId recipients sent delivered bounced complained opens uniqueOpens clicks uniqueClicks unsubscribed openRate clickRate bounceRate complaintRate }
  }
`,d=`
  mutation ImportSubscribers($input: ImportSubscribersInput!) {
    importSubscribers(input: $input) {
      import { id status total processed }
      userErrors { field message code }
    }
  }
`,c=`
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
`,m=`
  subscription ImportProgressLive($id: ID!) {
    importProgress(id: $id) { status total processed inserted updated skipped failed error }
  }
`;export{e as a,t as b,s as c,i as d,a as e,n as f,r as g,o as h,p as i,u as j,d as k,c as l,m};
