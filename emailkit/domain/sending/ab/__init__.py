"""A/B tests of campaigns: 2 to 5 variants sent to a share of the audience, then the winner to the rest.

* :mod:`.split`: who tests which variant, a pure function of (campaign, subscriber);
* :mod:`.significance`: the winner's lift over the runner-up and the two-proportion z-test;
* :mod:`.definition`: the variants and settings a campaign is given, checked like its own content;
* :mod:`.state`: the test's phases as the lifecycle sees them, and what the campaign's statusReason says;
* :mod:`.winner`: the standings, the automatic and the manual choice, and sending the rest the winner.

The phases: the campaign starts RUNNING and its batches materialise only the test share (each recipient with
their variant); once they are all done the test waits ``waitSeconds``; then the ticker (or ``pickWinner``)
chooses the winner and the same batches run again for everybody else, who all get the winner. The ledger's
uniqueness per (campaign, subscriber) keeps each person to one variant and one message through it all.
"""
