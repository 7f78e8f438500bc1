import{a as x}from"./chunk-M357TFYA.js";import{d as w,h as R,i as t,j as d,k as T,l as k}from"./chunk-LXKDMMRV.js";var I=`
  query Flows {
    flows(first: 100) {
      totalCount
      edges { node { id name status version stats { entered active completed exited } } }
    }
  }
`,b=`
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
`,D=`
  subscription FlowStatsLive($id: ID!) {
    flowStats(id: $id) {
      flowId
      stats { entered active completed exited }
      steps { key stats { entered completed sent skipped failed opened clicked } }
    }
  }
`,O=`
  mutation PauseFlow($input: FlowIdInput!) {
    pauseFlow(input: $input) {
      flow { id status }
      userErrors { field message code }
    }
  }
`,U=`
  mutation ResumeFlow($input: FlowIdInput!) {
    resumeFlow(input: $input) {
      flow { id status }
      userErrors { field message code }
    }
  }
`,P=`
  mutation ArchiveFlow($input: FlowIdInput!) {
    archiveFlow(input: $input) {
      flow { id status }
      userErrors { field message code }
    }
  }
`,W=`
  mutation PublishFlow($input: PublishFlowInput!) {
    publishFlow(input: $input) {
      flow { id status }
      userErrors { field message code }
    }
  }
`;var m=[["entered","Entered"],["active","Active"],["completed","Completed"],["exited","Exited"]],E=[["entered","Entered"],["completed","Completed"],["sent","Sent"],["skipped","Skipped"],["failed","Failed"],["opened","Opened"],["clicked","Clicked"]],L=e=>e?new Date(e).toLocaleString():"\u2014";function K(e){e.load(()=>w(e.key,I),i=>{let c=i.flows.edges.map(({node:u})=>t("tr",{},t("td",{},t("a",{href:`#/flows/${encodeURIComponent(u.id)}`},u.name)),t("td",{},u.status),t("td",{},u.version?`v${u.version}`:"\u2014"),...m.map(([o])=>t("td",{class:"num"},String(u.stats[o])))));d(e.main,t("h1",{},"Flows"),c.length?t("div",{class:"table-wrap"},t("table",{class:"flows"},t("caption",{class:"visually-hidden"},"Flows and their runs by status"),t("thead",{},t("tr",{},t("th",{scope:"col"},"Name"),t("th",{scope:"col"},"Status"),t("th",{scope:"col"},"Version"),...m.map(([,u])=>t("th",{scope:"col",class:"num"},u)))),t("tbody",{},...c))):t("p",{class:"muted"},"No flow yet. Flows are made through the API (createFlow)."))})}function H(e){let i=e.list?.name??e.segment?.name??e.eventName??e.attribute;return i?`${e.type} (${i})`:e.type}function Q(e){let i=[];return e.template&&i.push(`template ${e.template.name}`),e.waitSeconds&&i.push(`wait ${e.waitSeconds} s`),e.then||e.otherwise?i.push(`then ${e.then??"end"}, else ${e.otherwise??"end"}`):i.push(e.next?`next ${e.next}`:"then the run completes"),i.join(" \xB7 ")}function Y(e,i){let c=e.key;e.load(()=>w(c,b,{id:i,runStatus:null}),u=>{let o=u.flow;if(!o){d(e.main,t("p",{},"No such flow."),t("a",{href:"#/flows"},"Back to flows"));return}let f=t("div",{role:"status",class:"action-status"}),p=t("div",{class:"actions"});if(k(e)&&o.status!=="ARCHIVED"){let s=(r,h,V)=>x(e,f,r,async()=>V(await w(c,h,{input:{id:i}})));(o.status==="DRAFT"||o.hasUnpublishedChanges)&&p.append(s("Publish",W,r=>r.publishFlow)),o.status==="ACTIVE"&&p.append(s("Pause",O,r=>r.pauseFlow)),o.status==="PAUSED"&&p.append(s("Resume",U,r=>r.resumeFlow));let a=t("div",{class:"confirm",hidden:!0}),n=t("button",{type:"button",class:"danger"},"Archive");n.addEventListener("click",()=>{a.hidden=!1,a.querySelector("button")?.focus()});let l=t("button",{type:"button",class:"secondary"},"Keep it");l.addEventListener("click",()=>{a.hidden=!0,n.focus()}),d(a,t("span",{},`Archive \u201C${o.name}\u201D for good? Every run still inside leaves it.`),s("Yes, archive",P,r=>r.archiveFlow),l),p.append(n,a)}let C=new Map,N=t("dl",{class:"counters"},...m.map(([s,a])=>{let n=t("dd",{},String(o.stats[s]));return C.set(s,n),t("div",{class:"counter"},t("dt",{},`${a} runs`),n)})),A=new Map,G=o.steps.map(s=>{let a=new Map;return A.set(s.key,a),t("tr",{},t("th",{scope:"row"},s.key),t("td",{},s.type),t("td",{class:"step-detail"},Q(s)),...E.map(([n])=>{let l=t("td",{class:"num"},String(s.stats[n]));return a.set(n,l),l}))}),F=t("div",{"aria-live":"polite"}),S=t("select",{},t("option",{value:""},"All"),t("option",{value:"ACTIVE"},"ACTIVE"),t("option",{value:"COMPLETED"},"COMPLETED"),t("option",{value:"EXITED"},"EXITED")),$=s=>{let a=s.edges.map(({node:n})=>t("tr",{},t("td",{class:"email"},n.subscriber?.email??"(erased)"),t("td",{},n.status),t("td",{},n.currentStep?.key??"\u2014"),t("td",{},L(n.enteredAt)),t("td",{},n.status==="ACTIVE"?n.dueAt?`due ${L(n.dueAt)}`:"":n.exitReason??L(n.finishedAt))));d(F,a.length?t("div",{class:"table-wrap"},t("table",{class:"runs flow-runs"},t("caption",{},`Latest runs (${s.totalCount}${s.totalCountPrecision==="EXACT"?"":"+"} in all)`),t("thead",{},t("tr",{},...["Person","Status","At step","Entered","Due / ended"].map(n=>t("th",{scope:"col"},n)))),t("tbody",{},...a))):t("p",{class:"muted"},"No run."))};$(o.runs);let g=async()=>{try{let s=await w(c,b,{id:i,runStatus:S.value||null});s.flow&&$(s.flow.runs)}catch(s){e.showError(F,s,()=>{g()})}};S.addEventListener("change",()=>{g()}),d(e.main,t("p",{},t("a",{href:"#/flows"},"\u2190 Flows")),t("h1",{},o.name),t("p",{},"Status: ",t("span",{class:"status"},o.status),` \xB7 Version ${o.version||"none published"}`,o.hasUnpublishedChanges&&o.status!=="DRAFT"?" (the draft has unpublished changes)":"",` \xB7 Trigger: ${H(o.trigger)}`),p,f,t("h2",{},"Runs by status"),N,t("h2",{},"Steps"),t("div",{class:"table-wrap"},t("table",{class:"steps"},t("caption",{class:"visually-hidden"},"Each step and its counters"),t("thead",{},t("tr",{},t("th",{scope:"col"},"Step"),t("th",{scope:"col"},"Type"),t("th",{scope:"col"},"Does"),...E.map(([,s])=>t("th",{scope:"col",class:"num"},s)))),t("tbody",{},...G))),t("h2",{},"Runs"),t("div",{class:"filters"},T("Show runs",S)),F);let v=!1,y=!1,M=async()=>{if(v){y=!0;return}v=!0;try{do y=!1,await g();while(y)}finally{v=!1}};e.onLeave(R(e.live(),D,{id:i},s=>{let a=s.flowStats;for(let[n]of m){let l=C.get(n);l&&(l.textContent=String(a.stats[n]))}for(let n of a.steps){let l=A.get(n.key);if(l)for(let[r]of E){let h=l.get(r);h&&(h.textContent=String(n.stats[r]))}}M()},s=>d(f,t("p",{class:"error",role:"alert"},s))))})}export{Y as renderFlow,K as renderFlows};
