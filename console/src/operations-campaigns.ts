// The operations of the campaign detail, compose and flow screens (see operations.ts for the marker that
// graphql-codegen reads).

export const CAMPAIGN_DETAIL = /* GraphQL */ `
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
`;

export const CAMPAIGN_DELIVERIES = /* GraphQL */ `
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
`;

export const RETRY_FAILED_DELIVERIES = /* GraphQL */ `
  mutation RetryFailedDeliveries($input: RetryFailedDeliveriesInput!) {
    retryFailedDeliveries(input: $input) {
      retried
      userErrors { field message code }
      warnings { code message }
    }
  }
`;

export const TEMPLATES = /* GraphQL */ `
  query Templates {
    templates(first: 100, kind: CAMPAIGN) {
      edges { node { id name format } }
    }
  }
`;

export const NEW_CAMPAIGN_CHOICES = /* GraphQL */ `
  query NewCampaignChoices {
    lists(first: 100) { edges { node { id name } } }
    templates(first: 100, kind: CAMPAIGN) { edges { node { id name format subject } } }
  }
`;

export const TEMPLATE = /* GraphQL */ `
  query TemplateDetail($id: ID!) {
    template(id: $id) { id name kind format subject body }
  }
`;

export const PREVIEW_TEMPLATE = /* GraphQL */ `
  mutation PreviewTemplate($input: PreviewTemplateInput!) {
    previewTemplate(input: $input) {
      subject
      html
      userErrors { field message code }
    }
  }
`;

export const CREATE_TEMPLATE = /* GraphQL */ `
  mutation CreateTemplate($input: CreateTemplateInput!) {
    createTemplate(input: $input) {
      template { id name }
      userErrors { field message code }
    }
  }
`;

export const UPDATE_TEMPLATE = /* GraphQL */ `
  mutation UpdateTemplate($input: UpdateTemplateInput!) {
    updateTemplate(input: $input) {
      template { id name }
      userErrors { field message code }
    }
  }
`;

export const CREATE_CAMPAIGN_FROM = /* GraphQL */ `
  mutation CreateCampaignFrom($input: CreateCampaignInput!) {
    createCampaign(input: $input) {
      campaign { id name }
      userErrors { field message code }
    }
  }
`;
