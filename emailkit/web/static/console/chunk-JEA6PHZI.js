var e=`
  query CampaignDetail($id: ID!) {
    campaign(id: $id) {
      id
      name
      subject
      status
      statusReason
      fromEmail
      fromName
      lists { id name }
      template { id name }
      progress { status statusReason recipients sent failed skipped inDoubt ratePerSecond etaSeconds }
      stats { campaignId recipients sent delivered bounced complained opens uniqueOpens clicks uniqueClicks unsubscribed openRate clickRate bounceRate complaintRate }
      timeline(bucket: HOUR) { start delivered opens clicks }
      links { url clicks uniqueClicks }
    }
  }
`,t=`
  query CampaignDeliveries($id: ID!, $first: Int!, $after: String, $status: DeliveryStatus) {
    campaign(id: $id) {
      id
      deliveries(first: $first, after: $after, status: $status) {
        totalCount
        totalCountPrecision
        pageInfo { hasNextPage endCursor }
        edges { node { id email status skipReason lastError attempts sentAt } }
      }
    }
  }
`,i=`
  mutation RetryFailedDeliveries($input: RetryFailedDeliveriesInput!) {
    retryFailedDeliveries(input: $input) {
      retried
      userErrors { field message code }
      warnings { code message }
    }
  }
`,a=`
  query Templates {
    templates(first: 100, kind: CAMPAIGN) {
      edges { node { id name format } }
    }
  }
`,s=`
  query NewCampaignChoices {
    lists(first: 100) { edges { node { id name } } }
    templates(first: 100, kind: CAMPAIGN) { edges { node { id name format subject } } }
  }
`,n=`
  query TemplateDetail($id: ID!) {
    template(id: $id) { id name kind format subject body }
  }
`,r=`
  mutation PreviewTemplate($input: PreviewTemplateInput!) {
    previewTemplate(input: $input) {
      subject
      html
      userErrors { field message code }
    }
  }
`,p=`
  mutation CreateTemplate($input: CreateTemplateInput!) {
    createTemplate(input: $input) {
      template { id name }
      userErrors { field message code }
    }
  }
`,o=`
  mutation UpdateTemplate($input: UpdateTemplateInput!) {
    updateTemplate(input: $input) {
      template { id name }
      userErrors { field message code }
    }
  }
`,d=`
  mutation CreateCampaignFrom($input: CreateCampaignInput!) {
    createCampaign(input: $input) {
      campaign { id name }
      userErrors { field message code }
    }
  }
`;export{e as a,t as b,i as c,a as d,s as e,n as f,r as g,p as h,o as i,d as j};
